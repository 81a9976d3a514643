"""Print the watermark pass-target table (spec/watermark.md §4) for the keyed patchwork mark.

    python tools/watermark_report.py [--clips 20] [--negatives 1000] [--seed 0]

Clips: espeak-ng speech (tools/make_speech_clips.py) when espeak-ng is installed, and always
seeded synthetic voiced speech. Negatives: seeded unmarked clips (speech-like, noises, tones,
silence, hiss, marked under another key) plus the unmarked espeak clips. Speed: medians of 5
runs on one pinned core, next to one numpy STFT pass of the same clip as a peer.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from csm_audio.watermark import DEFAULT_PARAMS, DEFAULT_PAYLOAD, detect, embed, false_positive_bound  # noqa: E402
from csm_audio.watermark import attacks, evaluate, testsignals  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import make_speech_clips  # noqa: E402


def synthetic_clips(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [testsignals.voiced_speech(seed * 1000 + i, float(rng.uniform(3, 10)), peak=float(rng.uniform(0.3, 0.5)))
            for i in range(n)]


def espeak_clips(n: int, seed: int) -> list[np.ndarray]:
    if not make_speech_clips.have_espeak():
        return []
    with tempfile.TemporaryDirectory() as tmp:
        return [sf.read(p, dtype="float32")[0] for p in make_speech_clips.make_clips(Path(tmp), n, seed)]


def stft_peer(x: np.ndarray) -> float:
    """Seconds for one float32 Hann STFT (1024/512) of x: the floor any STFT mark pays."""
    t0 = time.perf_counter()
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float32), 1024)[::512]
    np.fft.rfft(frames * np.hanning(1024).astype(np.float32), axis=1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    p = DEFAULT_PARAMS

    sets = {"espeak": espeak_clips(a.clips, a.seed), "synthetic": synthetic_clips(a.clips, a.seed)}
    sets = {k: v for k, v in sets.items() if v}
    durs = {k: [len(x) / 24000 for x in v] for k, v in sets.items()}
    print(f"# keyed STFT patchwork watermark — {', '.join(f'{k}: {len(v)} clips {min(durs[k]):.1f}–{max(durs[k]):.1f} s' for k, v in sets.items())}")
    if "espeak" not in sets:
        print("# (espeak-ng not installed: synthetic clips only; apt-get install espeak-ng sox)")
    stress = list(attacks.stress_attacks(24000))
    sweeps = {k: evaluate.payload_sweep(v, seed=a.seed, conditions=list(evaluate.TARGETS) + stress) for k, v in sets.items()}

    cols = list(sweeps)
    print("\n| condition | target | " + " | ".join(f"{c} exact decode | {c} min z" for c in cols) + " | pass |")
    print("|---|---|" + "---|---|" * len(cols) + "---|")
    all_pass = True
    for cond, target in evaluate.TARGETS.items():
        cells, ok = [], True
        for c in cols:
            s = sweeps[c]
            rate = s.rate(cond)
            ok &= rate >= target
            cells.append(f"{rate * 100:.0f}% ({sum(s.decoded[cond])}/{len(s.decoded[cond])}) | {min(s.scores[cond]):.1f}")
        all_pass &= ok
        print(f"| {cond} | >= {target * 100:.0f}% | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    for cond in stress:  # harder than the targets: information only
        cells = [f"{sweeps[c].rate(cond) * 100:.0f}% ({sum(sweeps[c].decoded[cond])}/{len(sweeps[c].decoded[cond])}) | "
                 f"{min(sweeps[c].scores[cond]):.1f}" for c in cols]
        print(f"| {cond} (stress) | none | " + " | ".join(cells) + " | info |")
    for c in cols:
        s = sweeps[c]
        snr_ok = min(s.snr_db) >= 25 and s.clipped == 0
        all_pass &= snr_ok
        print(f"| watermark SNR ({c}) | >= 25 dB, no clipping | min {min(s.snr_db):.2f} dB, median {np.median(s.snr_db):.2f} dB, "
              f"{s.clipped} clipped samples | | {'yes' if snr_ok else 'NO'} |")

    neg = evaluate.negative_sweep(a.negatives, seed=a.seed, extra=sets.get("espeak"))
    bound = false_positive_bound(p)
    fp_ok = neg.false_positives == 0 and neg.n_clips >= 1000 and bound <= 1e-6
    all_pass &= fp_ok or a.negatives < 1000
    worst = ", ".join(f"{k} {v:.2f}" for k, v in neg.max_score.items() if np.isfinite(v))
    print(f"| false positives | 0 in >= 1000; bound <= 1e-6 | {neg.false_positives} in {neg.n_clips} unmarked clips; "
          f"bound {bound:.1e} per clip | max sync z by kind (threshold {p.sync_threshold}): {worst} | {'yes' if fp_ok else 'NO'} |")

    x = np.tile(sets.get("espeak", sets["synthetic"])[0], 4)[: 24000 * 10]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rt_embed, rt_detect = evaluate.speed(x, repeats=5)
    peer = 10 / float(np.median([stft_peer(x) for _ in range(5)]))
    speed_ok = rt_embed >= 20 and rt_detect >= 20
    all_pass &= speed_ok
    print(f"| speed, 1 core, 10 s clip | >= 20x real time | embed {rt_embed:.0f}x, detect {rt_detect:.0f}x "
          f"(peer: one STFT pass {peer:.0f}x; detect runs {p.n_offsets} offsets) | | {'yes' if speed_ok else 'NO'} |")

    short = detect(x[:12000], 24000)
    r48 = detect(__import__("soxr").resample(embed(x, 24000), 24000, 48000), 48000)
    try:
        detect(np.full(24000, np.nan), 24000)
        nan = "no error (BAD)"
    except ValueError as e:
        nan = f"ValueError: {e}"
    print(f"\nbad input: 0.5 s clip → found={short.found} ({short.reason}); 48 kHz input → found={r48.found} "
          f"payload={r48.payload:#x}; NaN → {nan}")
    clips = sets.get("espeak", sets["synthetic"])
    streamed = 0
    for x in clips:  # the pipeline may mark audio as it streams, one 80 ms Mimi frame at a time
        y = np.concatenate([embed(x[i : i + 1920], 24000, start_sample=i) for i in range(0, len(x), 1920)])
        r = detect(y, 24000)
        streamed += int(r.found and r.payload == DEFAULT_PAYLOAD)
    print(f"streamed embed in 80 ms chunks (start_sample set): {streamed}/{len(clips)} decoded")
    print(f"threshold {p.sync_threshold}, {p.n_candidates} sync hypotheses/clip; bound = {p.n_candidates} · exp(-T²/2) · 2^-16")
    print(f"ALL TARGETS MET: {'yes' if all_pass else 'NO'}")


if __name__ == "__main__":
    main()
