"""Make seeded real-speech test clips with espeak-ng (Debian: apt-get install espeak-ng sox).

    python tools/make_speech_clips.py OUT_DIR [--count 20]

Writes clip_NN.wav (24 kHz mono PCM16, 3–10 s) and returns/prints the paths. Voices, speeds
and pitches are drawn from a seeded generator, so the same seed gives the same clips. Used by
tools/watermark_report.py when espeak-ng is installed; tests never need it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "The rainbow is a division of white light into many beautiful colors.",
    "These take the shape of a long round arch, with its path high above, and its two ends apparently beyond the horizon.",
    "There is, according to legend, a boiling pot of gold at one end.",
    "People look, but no one ever finds it.",
    "A watermark should survive compression, noise and resampling without being heard.",
    "Generated speech is marked so that it can be recognised later as synthetic.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "The meeting has been moved to half past four on Thursday afternoon.",
    "Could you tell me the way to the nearest railway station, please?",
    "Our engineers measured the latency of every stage of the pipeline twice.",
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk.",
    "Numbers like seventeen, forty two and nine hundred are read aloud clearly.",
    "I never said she stole my money, but somebody certainly did.",
    "Bright vixens jump; dozy fowl quack.",
    "A large fawn jumped quickly over white zinc boxes.",
    "After the storm, the village gathered in the square to count the damage.",
    "Turn left at the second traffic light, then keep going until you see the bakery.",
    "Music, laughter and the smell of roasted chestnuts filled the winter market.",
]
VOICES = ["en", "en-us", "en-gb-x-rp", "en+f3", "en+m3", "en-us+f2", "en+f4", "en-us+m5"]
SR = 24000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def make_clips(out_dir: Path, count: int = 20, seed: int = 0) -> list[Path]:
    """Synthesize count clips of 3–10 s into out_dir; returns their paths."""
    if not have_espeak():
        raise RuntimeError("espeak-ng not found (Debian: apt-get install espeak-ng sox)")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            target = rng.uniform(3.0, 10.0)
            voice = VOICES[i % len(VOICES)]
            speed, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 70))
            order = rng.permutation(len(SENTENCES))
            audio = np.zeros(0)
            for j in order:  # add sentences until the clip is long enough
                wav = Path(tmp) / "s.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav),
                                SENTENCES[j]], check=True, capture_output=True)
                x, sr = sf.read(wav, dtype="float64")
                audio = np.concatenate([audio, soxr.resample(x, sr, SR)])
                if len(audio) >= target * SR:
                    break
            audio = audio[: int(target * SR)]
            audio *= rng.uniform(0.3, 0.9) / max(np.max(np.abs(audio)), 1e-9)
            path = out_dir / f"clip_{i:02d}.wav"
            sf.write(path, audio, SR, subtype="PCM_16")
            paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for p in make_clips(a.out_dir, a.count, a.seed):
        print(p)


if __name__ == "__main__":
    sys.exit(main())
