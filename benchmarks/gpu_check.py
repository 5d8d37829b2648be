"""GPU smoke check and throughput at the paper's settings. Not a test.

Run on a CUDA machine:  python benchmarks/gpu_check.py [--out DIR] [--quick]

Measures, at 224 px with the paper's ResNet-50 classifier (random weights: no ImageNet weights
can be downloaded; throughput does not depend on the weights' values):
  1. training steps of the ResNet-50 classifier head (frozen backbone) and of the DeepLabv3-
     ResNet50 Explainer with the paper's loss, fp32 vs bf16 autocast, channels-last;
  2. images per second of every method at the paper's settings (RISE 8000 masks, EP 800
     iterations x 4 areas, iGOS++ 20 x 15, Grad-CAM, Guided Backprop, the Explainer);
  3. the Explainer's speed-up over RISE and Extremal Perturbations.
Timing: warm-up, then CUDA-synchronised wall time; per-image figures = time / images.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _sync():
    torch.cuda.synchronize()


def timed(fn, repeat=3, warmup=1):
    for _ in range(warmup):
        fn()
    _sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def train_steps(module_step, params, steps, amp):
    opt = torch.optim.Adam(params, lr=1e-4)

    def run():
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = module_step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return timed(run, repeat=1, warmup=0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print("device:", res["gpu"], "torch", torch.__version__, flush=True)

    from attrbench.models import fingerprint, save_explainer
    from attrbench.models.classifiers import PaperResNet50
    from attrbench.models.explainer_nets import deeplabv3_resnet50
    from attrbench.training.losses import explainer_loss

    k = 20
    clf = PaperResNet50(k).to(dev).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    g = torch.Generator(device=dev).manual_seed(0)
    x64 = torch.randn(64, 3, 224, 224, device=dev, generator=g)
    y64 = (torch.rand(64, k, device=dev, generator=g) < 0.15).float()
    y64[:, 0] = 1

    # ---------------------------------------------------------------- 1. training throughput
    steps = 10 if args.quick else 40
    head = clf.backbone.fc
    for p in head.parameters():
        p.requires_grad_(True)
    bce = torch.nn.BCEWithLogitsLoss()
    for amp in (False, True):
        t = train_steps(lambda: bce(clf(x64), y64), list(head.parameters()), steps, amp)
        res[f"classifier_train_img_s_{'bf16' if amp else 'fp32'}"] = 64 / t
        print(f"ResNet-50 head training, batch 64, {'bf16' if amp else 'fp32'}: {64 / t:.0f} img/s",
              flush=True)
    for p in head.parameters():
        p.requires_grad_(False)

    expl = deeplabv3_resnet50(k).to(dev)
    x16, y16 = x64[:16], y64[:16]
    w = {"entropy": 1.0, "tv": 1.0, "area_constraint": 1.0, "target_area": 0.1,
         "nontarget_area": 0.3, "class_min_area": 0.05, "class_max_area": 0.30}
    for amp, cl in ((False, False), (True, False), (True, True)):
        if cl:
            expl = expl.to(memory_format=torch.channels_last)
            clf.to(memory_format=torch.channels_last)
        xin = x16.contiguous(memory_format=torch.channels_last) if cl else x16
        expl.train()
        t = train_steps(lambda expl=expl, xin=xin: explainer_loss(expl(xin), xin, y16, clf,
                                                                  **w)["loss"],
                        list(expl.parameters()), steps, amp)
        tag = ("bf16" if amp else "fp32") + ("_cl" if cl else "")
        res[f"explainer_train_img_s_{tag}"] = 16 / t
        print(f"DeepLabv3-ResNet50 Explainer training (paper loss), batch 16, {tag}: "
              f"{16 / t:.1f} img/s", flush=True)
    expl = expl.to(memory_format=torch.contiguous_format).eval()
    clf.to(memory_format=torch.contiguous_format)

    # ---------------------------------------------------------------- 2. methods at paper settings
    import attrbench

    ck = os.path.join(args.out, "tmp_explainer.pt")
    save_explainer(expl.cpu(), ck, "deeplabv3_resnet50", k, fingerprint(clf), "explainer")
    expl.to(dev)
    n = 4 if args.quick else 8
    x, t = x64[:n].contiguous(), torch.zeros(n, dtype=torch.long, device=dev)
    settings = {
        "explainer": {"checkpoint": ck},
        "gradcam": {},
        "guided_backprop": {},
        "rise": {"num_masks": 8000, "batch_size": 32},
        "rise_b512": {"num_masks": 8000, "batch_size": 512},
        "extremal_perturbations": {"max_iter": 100 if args.quick else 800},
        "igos_pp": {"iterations": 20, "ig_iter": 15, "mask_size": 28},
    }
    per_img = {}
    for name, opts in settings.items():
        reg = name.split("_b")[0] if name.startswith("rise") else name
        try:
            m = attrbench.create_method(reg, clf, **opts)
            nn_ = 2 if reg in ("extremal_perturbations", "igos_pp") else n
            xi, ti = x[:nn_], t[:nn_]
            sec = timed(lambda m=m, xi=xi, ti=ti: m.attribute(xi, ti),
                        repeat=1 if nn_ == 2 else 3, warmup=1)
            per_img[name] = sec / nn_
            print(f"{name:24s} {1000 * sec / nn_:10.2f} ms/img  {nn_ / sec:10.2f} img/s", flush=True)
        except Exception as exc:  # noqa: BLE001
            per_img[name] = None
            print(f"{name:24s} FAILED: {type(exc).__name__}: {exc}", flush=True)
    # bf16 Explainer inference
    with torch.autocast("cuda", dtype=torch.bfloat16):
        m = attrbench.create_method("explainer", clf, checkpoint=ck)
        xb = x64[:32]
        sec = timed(lambda: m.attribute_all(xb), repeat=5, warmup=2)
    per_img["explainer_bf16_b32"] = sec / 32
    print(f"{'explainer (bf16, b32)':24s} {1000 * sec / 32:10.2f} ms/img  {32 / sec:10.2f} img/s")
    res["ms_per_image"] = {kk: (None if v is None else 1000 * v) for kk, v in per_img.items()}
    if per_img.get("explainer") and per_img.get("rise"):
        res["explainer_speedup_vs_rise"] = per_img["rise"] / per_img["explainer"]
        res["explainer_speedup_vs_rise_b512"] = per_img["rise_b512"] / per_img["explainer"]
    if per_img.get("explainer") and per_img.get("extremal_perturbations"):
        ep = per_img["extremal_perturbations"] * (8 if args.quick else 1)
        res["explainer_speedup_vs_ep"] = ep / per_img["explainer"]
    for kk in ("explainer_speedup_vs_rise", "explainer_speedup_vs_rise_b512",
               "explainer_speedup_vs_ep"):
        if kk in res:
            print(f"{kk}: {res[kk]:.0f}x")
    res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    os.remove(ck)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
