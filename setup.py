from setuptools import find_packages, setup

setup(
    name="flac2all",
    version="6.0.0",
    description="Convert a FLAC library to mp3, Ogg Vorbis, Opus, AAC, FLAC or any ffmpeg codec on every core",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["flac2all", "flac2all.*"]),
    install_requires=["mutagen>=1.47", "rich>=13", "pyzmq>=25"],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2"]},
    entry_points={
        "console_scripts": [
            "flac2all = flac2all.cli:main",
            "flac2all_worker = flac2all.cluster.worker:main",
        ]
    },
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
        "Environment :: Console",
        "Topic :: Multimedia :: Sound/Audio :: Conversion",
    ],
)
