"""Why eager PyTorch on the CPU is hard to predict: a depthwise convolution's time depends on
where its input and output lie in memory.

Times one fbnet-sized depthwise 3x3 convolution (48 channels at 112x112, the inside of an e3
block at the second layer) with its input placed at different float offsets inside a larger
buffer, each made while the previous one is alive, in NCHW (torch's default) and in
channels_last, 1 thread, denormals flushed. Offsets are interleaved over rounds; each figure is
the median of the rounds' medians, with the range over rounds (the placement the allocator
chooses is not the offset alone, so the same offset can be fast in one round and slow in another).

    python benchmarks/torch_depthwise_alignment.py [--rounds 5] [--calls 20]

On the 2-core AMD EPYC VM of this project (quiet, 5 rounds) NCHW took 0.33 to 4.47 ms (median
0.41 ms, 13.6x between placements), channels_last 0.16 to 0.32 ms (2.0x). A latency table
measures each op at one placement and an end-to-end run meets others, which is why torch-cpu
tables are shipped profiled with `--channels-last` and why `ort-cpu` is the backend to search
with on CPUs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

OFFSETS = (0, 1, 4, 8, 16, 64, 256, 1024)  # floats


def median_ms(conv: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        times = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            conv(x)
            times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def placed_input(channels: int, size: int, offset: int, channels_last: bool) -> torch.Tensor:
    n = channels * size * size
    buffer = torch.randn(n + 2048)
    flat = buffer[offset:offset + n]
    if channels_last:
        return flat.view(1, size, size, channels).permute(0, 3, 1, 2)
    return flat.view(1, channels, size, size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=20, help="timed calls per offset per round")
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--size", type=int, default=112)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    print(f"depthwise 3x3, {args.channels} channels at {args.size}x{args.size}, 1 thread; "
          f"{args.rounds} interleaved rounds of {args.calls} calls per offset")
    for channels_last in (False, True):
        conv = torch.nn.Conv2d(args.channels, args.channels, 3, padding=1, groups=args.channels, bias=False).eval()
        if channels_last:
            conv = conv.to(memory_format=torch.channels_last)
        rounds = {o: [] for o in OFFSETS}
        x = None
        for _ in range(args.rounds):
            for o in OFFSETS:
                # a fresh buffer per placement, made while the previous one is still alive (as a
                # network's activations are): where it and the convolution's output land changes
                x = placed_input(args.channels, args.size, o, channels_last)
                rounds[o].append(median_ms(conv, x, args.calls))
        per_offset = {o: statistics.median(v) for o, v in rounds.items()}
        every = [ms for v in rounds.values() for ms in v]
        fastest, slowest = min(every), max(every)
        layout = "channels_last" if channels_last else "NCHW"
        print(f"{layout:>13}: median over rounds " + "  ".join(f"+{o}:{ms:.2f}" for o, ms in per_offset.items()))
        print(f"{'':>13}  every placement timed: fastest {fastest:.2f} ms, median {statistics.median(every):.2f} ms, "
              f"slowest {slowest:.2f} ms ({slowest / fastest:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
