#!/usr/bin/env python3
"""PyTorch eager reference for `greentrainer bench train` and `greentrainer bench forward`.

Full fine-tuning of the model a config.json describes (random weights: speed does not depend on
them), with the batch, length and optimizer the Rust bench uses: HF transformers in f32, its
default attention, AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01), random token ids as both
input and labels. Prints one JSON object on stdout; exits 3 with {"error": ...} when torch,
transformers or the asked device is missing, so the bench can skip the comparison.

Timing: one warm-up step, then the median (upper middle) of --steps steps, each synchronised with
the device before the clock is read. f32 matrix products stay in full f32 (no TF32), as the
engine computes them.
"""

import argparse
import json
import resource
import sys
import time


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def fail(message):
    print(json.dumps({"error": message}))
    return 3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a folder holding config.json")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--lr", type=float, default=1e-5)
    args = ap.parse_args()

    try:
        import torch
        import transformers
    except ImportError as e:
        return fail(f"needs torch and transformers ({e})")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(args.config)
    model = transformers.AutoModelForCausalLM.from_config(config).to(device=args.device, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=args.device)
    cuda = args.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward_tokens_per_s():
        model.eval()
        times = []
        with torch.no_grad():
            for i in range(args.steps + 1):
                sync()
                start = time.perf_counter()
                model(input_ids=ids)
                sync()
                if i > 0:
                    times.append(time.perf_counter() - start)
        model.train()
        return args.batch * args.seq / median(times)

    steps, fwd_bwd = [], []
    for i in range(args.steps + 1):
        sync()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        sync()
        backward_done = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i > 0:
            steps.append(time.perf_counter() - start)
            fwd_bwd.append(backward_done - start)
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        device_name = torch.cuda.get_device_name()
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = f"CPU, {torch.get_num_threads()} threads"
    step_s = median(steps)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "device": device_name,
                "attention": getattr(model.config, "_attn_implementation", "unknown"),
                "params": sum(p.numel() for p in model.parameters()),
                "step_s": step_s,
                "fwd_bwd_s": median(fwd_bwd),
                "tokens_per_s": args.batch * args.seq / step_s,
                "forward_tokens_per_s": forward_tokens_per_s(),
                "peak_mib": peak_mib,
                "loss": loss.item(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
