"""Generate the small sample library the demo converts.

Real FLAC files made with sox and tagged with mutagen: three albums, full
tags, a front cover, one 24-bit/96 kHz track and one 5.1 track, a few
seconds each. Deterministic: same command, same files.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from mutagen.flac import FLAC, Picture

ALBUMS = {
    ("Sine Quartet", "Tones", "2019"): [
        ("Opening", "220", 16, 44100, 2),
        ("Interval", "330", 16, 44100, 2),
        ("Fifth", "440", 16, 44100, 2),
    ],
    ("Noise Ensemble", "High Resolution", "2022"): [
        ("Hiss in 96k", "pinknoise", 24, 96000, 2),
        ("Brown", "brownnoise", 24, 48000, 2),
    ],
    ("Surround Co.", "Five Point One", "2024"): [
        ("Around", "523", 16, 48000, 6),
        ("Back, again: = test", "659", 16, 44100, 2),
    ],
}


def cover(path: Path, colour: str) -> bytes:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c={colour}:s=200x200",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def main(root: Path) -> None:
    colours = iter(["navy", "darkred", "darkgreen"])
    for (artist, album, year), tracks in ALBUMS.items():
        folder = root / artist / f"{year} - {album}"
        folder.mkdir(parents=True, exist_ok=True)
        art = cover(folder / "cover.jpg", next(colours))
        for n, (title, sound, bits, rate, channels) in enumerate(tracks, 1):
            path = folder / f"{n:02d} {title}.flac"
            synth = ["synth", "3", sound if not sound.isdigit() else "sine", *([sound] if sound.isdigit() else [])]
            subprocess.run(
                [
                    "sox",
                    "-V1",
                    "-n",
                    "-r",
                    str(rate),
                    "-b",
                    str(bits),
                    "-c",
                    str(channels),
                    str(path),
                    *synth,
                    "fade",
                    "0.1",
                    "3",
                    "0.3",
                ],
                check=True,
            )
            f = FLAC(path)
            f.update(
                {
                    "TITLE": title,
                    "ARTIST": artist,
                    "ALBUMARTIST": artist,
                    "ALBUM": album,
                    "DATE": year,
                    "GENRE": ["Electronic", "Test"],
                    "TRACKNUMBER": str(n),
                    "TRACKTOTAL": str(len(tracks)),
                    "DISCNUMBER": "1",
                    "DISCTOTAL": "1",
                }
            )
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = 3, "image/jpeg", "front", art
            f.add_picture(pic)
            f.save()
    print(f"sample library: {sum(len(t) for t in ALBUMS.values())} FLAC files in {root}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", nargs="?", default="build/demo/music", help="the folder to make it in (default: build/demo/music)"
    )
    main(Path(parser.parse_args().folder))
