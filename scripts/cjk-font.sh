#!/usr/bin/env bash
# Makes assets/WenQuanYiMicroHei-gb2312.ttf, the font charts draw Chinese text
# with: WenQuanYi Micro Hei (Debian's fonts-wqy-microhei, Apache-2.0) cut to
# ASCII, Latin-1, general and CJK punctuation, full-width forms and the 6,763
# hanzi of GB 2312 (every name of the customs' tables), with fontTools from
# PyPI. The result is committed; builds do not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
ttc=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
if [ ! -f "$ttc" ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-wqy-microhei >/dev/null
fi
venv=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'fonttools==4.*'
"$venv/bin/python" - "$ttc" assets/WenQuanYiMicroHei-gb2312.ttf <<'PY'
import sys
from fontTools import subset
from fontTools.ttLib import TTCollection
src, out = sys.argv[1:3]
font = TTCollection(src).fonts[0]
chars = set(range(0x20, 0x7F)) | set(range(0xA0, 0x100)) | set(range(0x2010, 0x2060))
chars |= set(range(0x3000, 0x3040)) | set(range(0xFF00, 0xFFF0))
for hi in range(0xB0, 0xF8):
    for lo in range(0xA1, 0xFF):
        try:
            chars |= {ord(c) for c in bytes([hi, lo]).decode("gb2312")}
        except UnicodeDecodeError:
            pass
options = subset.Options()
options.hinting = False
options.layout_features = []
sub = subset.Subsetter(options)
sub.populate(unicodes=sorted(chars))
sub.subset(font)
font.save(out)
print(f"{out}: {len(chars)} characters")
PY
rm -rf "$venv"
ls -l assets/WenQuanYiMicroHei-gb2312.ttf
