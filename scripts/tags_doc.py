"""Write docs/tags.md from the tag tables (tests/tags/test_fidelity.py keeps the two
equal):

    .venv/bin/python scripts/tags_doc.py > docs/tags.md
"""

from __future__ import annotations

from flac2all.tags.id3 import ID3_DATE_FRAMES, ID3_TEXT_FRAMES, ID3_TXXX_NAMES, MUSICBRAINZ_UFID_OWNER
from flac2all.tags.mp4 import MP4_FREEFORM_NAMES, MP4_TEXT_ATOMS
from flac2all.tags.source import PROVENANCE_KEY


def mapping_markdown() -> str:
    """docs/tags.md, generated from the tables."""
    out = [
        "# Tag mapping",
        "",
        "Generated from the tables in `flac2all/tags/` by `scripts/tags_doc.py` (MusicBrainz Picard's tag mapping);",
        "`tests/tags/test_fidelity.py` checks that this file and the tables agree.",
        "",
        "Ogg Vorbis, Opus and FLAC outputs get the source's Vorbis comments verbatim (every key, every",
        "value, in order), except that Opus outputs get `R128_TRACK_GAIN`/`R128_ALBUM_GAIN` (Q7.8 dB",
        "relative to -23 LUFS: ReplayGain minus 5 dB) instead of `REPLAYGAIN_*` (RFC 7845). Pictures go to",
        "`METADATA_BLOCK_PICTURE` (Ogg) and PICTURE blocks (FLAC), every one with its type, MIME type and",
        "description.",
        "",
        "| Vorbis comment | ID3v2.4 (mp3) | MP4 (m4a) |",
        "|---|---|---|",
    ]
    rows: dict[str, list[str]] = {}

    def cell(key: str, column: int, text: str) -> None:
        rows.setdefault(key, ["", ""])[column] = text

    for key, frame in ID3_TEXT_FRAMES.items():
        cell(key, 0, frame)
    for key, frame in ID3_DATE_FRAMES.items():
        cell(key, 0, f"{frame} (TXXX:{key} if not a date)")
    cell("COMMENT", 0, "COMM (lang eng)")
    cell("DESCRIPTION", 0, "COMM, or TXXX:DESCRIPTION beside a COMMENT")
    cell("LYRICS", 0, "USLT (lang eng)")
    cell("UNSYNCEDLYRICS", 0, "USLT (lang eng, description UNSYNCEDLYRICS)")
    cell("MUSICBRAINZ_TRACKID", 0, f"UFID:{MUSICBRAINZ_UFID_OWNER}")
    cell("WEBSITE", 0, "WOAR")
    for key, name in ID3_TXXX_NAMES.items():
        cell(key, 0, f"TXXX:{name}")
    cell("TRACKNUMBER, TRACKTOTAL/TOTALTRACKS", 0, "TRCK n/N")
    cell("DISCNUMBER, DISCTOTAL/TOTALDISCS", 0, "TPOS n/N")
    for key, atom in MP4_TEXT_ATOMS.items():
        cell(key, 1, atom.replace("\xa9", "©"))
    cell("COMPILATION", 1, "cpil")
    cell("BPM", 1, "tmpo")
    for key, name in MP4_FREEFORM_NAMES.items():
        cell(key, 1, f"----:com.apple.iTunes:{name}")
    cell("TRACKNUMBER, TRACKTOTAL/TOTALTRACKS", 1, "trkn (n, N)")
    cell("DISCNUMBER, DISCTOTAL/TOTALDISCS", 1, "disk (n, N)")
    cell("any other (ISRC in MP4, ...)", 0, "TXXX:<NAME>")
    cell("any other (ISRC in MP4, ...)", 1, "----:com.apple.iTunes:<NAME>")
    for key, (id3_cell, mp4_cell) in sorted(rows.items()):
        out.append(f"| {key} | {id3_cell or 'TXXX:' + key} | {mp4_cell or '----:com.apple.iTunes:' + key} |")
    out += [
        "| pictures | APIC (type, MIME, description; descriptions made unique) | covr (JPEG and PNG only;"
        " others skipped with a warning) |",
        "",
        "`--id3v2.3`: multiple values are joined with '/', TDRC becomes TYER/TDAT(/TIME), TDOR becomes TORY",
        "(plus TXXX:ORIGINALDATE for a full date), TMOO and TSST become TXXX:MOOD and TXXX:DISCSUBTITLE, and",
        "the sort frames TSOP/TSOA/TSOT stay, as Picard writes them.",
        "",
        "`--replaygain`: `keep` (the default) copies the source's gain tags as above; `off` writes none;",
        "`compute` writes, in their place, the track gain and peak measured (EBU R128 / ITU-R BS.1770-4,",
        "true peak oversampled) from the decode the conversion makes anyway, as ReplayGain 2.0 does",
        "(reference -18 LUFS, `REPLAYGAIN_TRACK_GAIN=-6.54 dB`, `REPLAYGAIN_TRACK_PEAK=0.988553`), into every",
        "format as in the table (R128_TRACK_GAIN = round((-23 - loudness) x 256) in Opus); `fill` does so only",
        "for the sources without a track gain of their own. When every FLAC of an album was measured (in",
        "this run or an earlier one), the album's outputs are then retagged (not re-encoded) with",
        "`REPLAYGAIN_ALBUM_GAIN` and `REPLAYGAIN_ALBUM_PEAK` (`R128_ALBUM_GAIN` in Opus), gated over the",
        "blocks of all its tracks; a track added to it, removed or changed retags the others.",
        "",
        "`--album-by`: an album is the FLACs of one source folder (`folder`, the default), or (`tags`) the",
        "sources sharing ALBUMARTIST (or `ALBUM ARTIST`, as foobar2000 writes it, or `ALBUM_ARTIST`; else",
        "ARTIST), ALBUM and DISCNUMBER (`1/2` and `1` are one disc), in whatever folders, as beets groups",
        "a library by its tags; a source without ALBUM is in its folder's album, and so is a track of a",
        "compilation (`COMPILATION=1`) without an album artist, whose tracks' artists differ. A change of",
        "`--album-by` retags every measured output, encoding none; so does the first `--album-by tags` run",
        "over a state whose tag albums an earlier flac2all grouped (before `ALBUM ARTIST` and compilations",
        "were known).",
        "",
        "The tracks of a FLAC a CUE sheet splits (`--cue split`) are measured from their cuts of the one",
        "decode: each gets its own track gain, and the sheet's tracks are one album, whose gain is gated",
        "over the whole decode (the tracks not made again in a run too). They are in no other album. A",
        "change of their tags (the sheet's or the FLAC's) splits them again, as their gains come from the",
        "decode, which a retag does not make.",
        "",
        "A silent track, or one shorter than 400 ms, gets no gain. Sources are never modified. The `test`",
        "mode's analysis (`.ana`) then ends with a line `# loudness: integrated=... LUFS true_peak=...",
        "replaygain_track_gain=... dB`: a library measured without converting it. Changing `--replaygain`",
        "makes the outputs again (the policy is part of their settings; `keep` leaves the hashes as they were).",
        "",
        "`--opus-gain`: `r128` (the default) writes the R128 tags alone; `header` puts the album gain (the",
        "track's until the album's is known) into the Opus header's output gain, which every player applies,",
        "and the R128 tags then hold what is left on top of it (RFC 7845: `R128_ALBUM_GAIN=0`,",
        "`R128_TRACK_GAIN` = track - album); `both` writes the `REPLAYGAIN_*` tags beside the R128 ones, for",
        "players that read only those.",
        "",
        "`--embed-folder-art`: a source without an embedded front cover gets cover.jpg, folder.jpg or",
        "front.jpg (or .png) from its folder as front cover.",
        "",
        f"Provenance: every tagged output also carries `{PROVENANCE_KEY}` (TXXX in ID3, a freeform atom in",
        "MP4, a comment in Ogg and FLAC) = `v1 md5=<source audio MD5> settings=<hash> tags=<hash>",
        "pictures=<hash>`, from which the mirror's state is rebuilt when its database is lost. It is never",
        "copied from a source.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(mapping_markdown(), end="")
