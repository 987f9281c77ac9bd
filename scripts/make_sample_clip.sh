#!/usr/bin/env bash
# Reproduce samples/vtest_clip.mp4 from OpenCV's sample clip vtest.avi, as shipped by Debian's
# opencv-doc package (OpenCV sample data, see samples/README.md for licence and provenance).
#
#   scripts/make_sample_clip.sh [START_FRAME] [N_FRAMES]
#
# Needs apt-get/dpkg (Debian) and a Python with opencv (default: .venv/bin/python).
# Keeps vtest.avi's 768x576 frames and its 10 fps; re-encodes with cv2.VideoWriter ('avc1' when the
# OpenCV build has an H.264 encoder, else 'mp4v').
set -euo pipefail

START="${1:-0}"       # first frame taken from vtest.avi
COUNT="${2:-200}"     # 200 frames = 20 s at 10 fps
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$ROOT/samples/vtest_clip.mp4"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"   # so apt's _apt user can write the download there

(cd "$TMP" && apt-get download opencv-doc >/dev/null)
DEB="$(ls "$TMP"/opencv-doc_*.deb)"
echo "downloaded $(basename "$DEB") sha256=$(sha256sum "$DEB" | cut -d' ' -f1)"
dpkg -x "$DEB" "$TMP/x"
SRC="$TMP/x/usr/share/doc/opencv-doc/examples/data/vtest.avi"
echo "vtest.avi sha256=$(sha256sum "$SRC" | cut -d' ' -f1)"

mkdir -p "$ROOT/samples"
"$PY" - "$SRC" "$OUT" "$START" "$COUNT" <<'EOF'
import sys

import cv2

src, out, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cap = cv2.VideoCapture(src)
if not cap.isOpened():
    sys.exit(f"cannot open {src}")
fps = cap.get(cv2.CAP_PROP_FPS)
size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
cap.set(cv2.CAP_PROP_POS_FRAMES, start)

writer = None
for fourcc in ("avc1", "mp4v"):
    w = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if w.isOpened():
        writer = w
        break
    w.release()
if writer is None:
    sys.exit("no usable mp4 encoder in this OpenCV build")

n = 0
while n < count:
    ok, frame = cap.read()
    if not ok:
        break
    writer.write(frame)
    n += 1
writer.release()
cap.release()

chk = cv2.VideoCapture(out)
frames = 0
while chk.read()[0]:
    frames += 1
print(f"wrote {out}: fourcc={fourcc} frames={frames} fps={chk.get(cv2.CAP_PROP_FPS)} "
      f"size={int(chk.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(chk.get(cv2.CAP_PROP_FRAME_HEIGHT))}")
chk.release()
if frames != n or frames == 0:
    sys.exit(f"read back {frames} frames, wrote {n}")
EOF
ls -l "$OUT"
