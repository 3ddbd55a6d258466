#!/usr/bin/env bash
# System packages that pip cannot provide: Chromium, for the tests that open the rendered book
# as a reader would (tests/test_book.py); npm, for MathJax; Debian's Fashion-MNIST (chapter 7's
# Dogfish analogue; without it torchvision downloads it, with its checksums, when online). Installs
# them with apt-get when missing (as root, or with sudo); otherwise says what to install.
#
#   bash scripts/system_packages.sh        # the packages above
#   bash scripts/system_packages.sh pdf    # and TeX Live for `make pdf` and tests/test_pdf.py
set -euo pipefail
mode="${1:-}"
case "$mode" in "" | pdf) ;; *) echo "usage: $0 [pdf]" >&2; exit 2 ;; esac
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
if [ "$mode" = pdf ]; then
  # Sphinx's LaTeX with XeLaTeX: its packages (fncychap, tabulary, ... are in latex-extra;
  # polyglossia and fontspec in latex-recommended), latexmk to run it, FreeFont as the fonts.
  tex=(texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-xetex latexmk
    fonts-freefont-otf)
  if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${tex[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
    done
  elif ! command -v xelatex >/dev/null 2>&1 || ! command -v latexmk >/dev/null 2>&1; then
    need+=("${tex[@]}")
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "Missing system packages: ${need[*]}. Install them (Debian/Ubuntu: apt-get install ${need[*]})." >&2
  exit 1
fi
echo "Installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
