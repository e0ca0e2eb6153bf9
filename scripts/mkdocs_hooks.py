"""MkDocs hooks (mkdocs.yml names this file): the site's pages include
files kept at the repository's top (BENCHMARKS.md, CHANGELOG.md, the
systemd unit, through the snippets extension), read from the folder of
mkdocs.yml whatever the current folder; the pictures those files show are
added to the site here, so that each stays in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# Files at the repository's top that an included page links to.
TOP_FILES = ("bench-scale.svg",)


def on_config(config: Any) -> Any:
    config.mdx_configs["pymdownx.snippets"]["base_path"] = [str(Path(config.config_file_path).parent)]
    return config


def on_files(files: Files, config: Any) -> Files:
    top = Path(config.config_file_path).parent
    for name in TOP_FILES:
        files.append(
            File(name, src_dir=str(top), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
        )
    return files
