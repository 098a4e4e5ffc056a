"""``generate``'s A1111 noise and hires-fix options: variation seeds, seed resize, RNG source, hires fix."""

from __future__ import annotations

import argparse

from altdiffusion.errors import InvalidInputError


def size_arg(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height)."""
    from altdiffusion.pipelines.infotext import parse_size

    try:
        return parse_size(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_noise_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("variation seeds and noise (A1111)")
    g.add_argument(
        "--subseed", type=int, default=-1, help="variation seed; -1 picks one (used with --subseed-strength)"
    )
    g.add_argument(
        "--subseed-strength", type=float, default=0.0, help="0..1: how far the noise moves to the variation seed's"
    )
    g.add_argument(
        "--seed-resize-from",
        type=size_arg,
        default=None,
        metavar="WxH",
        help="draw the seed's noise at this size and centre it, to keep a seed's picture at a new size",
    )
    g.add_argument(
        "--rng",
        default="CPU",
        choices=("CPU", "GPU"),
        help="where the noise is drawn: CPU (default; the same on every machine) or GPU (A1111's default, CUDA)",
    )


def add_hires_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hires fix (A1111 enable_hr; the --hr-* options need --hires)")
    g.add_argument("--hires", action="store_true", help="upscale the picture and refine it in a second pass")
    g.add_argument("--hr-scale", type=float, default=None, help="upscale factor (default 2)")
    g.add_argument("--hr-resize", type=size_arg, default=None, metavar="WxH", help="upscale to this size instead")
    g.add_argument(
        "--hr-upscaler", default=None, help="Latent (default), Latent (bicubic), ..., Lanczos, Nearest (A1111's names)"
    )
    g.add_argument("--hr-steps", type=int, default=None, help="second-pass steps (default 0: the same as --steps)")
    g.add_argument(
        "--hr-denoising-strength", type=float, default=None, help="second-pass denoising strength (default 0.7)"
    )


def noise_and_hires(args, init_image) -> dict:
    """The pipeline arguments these options give, checked before any model loads (a --hr-* option
    without --hires is refused)."""
    from altdiffusion.pipelines.hires import HiresFix, check_hires
    from altdiffusion.pipelines.noise import check_subseed_strength

    resize_w, resize_h = args.seed_resize_from or (0, 0)
    given = {
        "scale": args.hr_scale,
        "upscaler": args.hr_upscaler,
        "steps": args.hr_steps,
        "denoising_strength": args.hr_denoising_strength,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if args.hr_resize:
        given.update(resize_x=args.hr_resize[0], resize_y=args.hr_resize[1])
    if given and not args.hires:
        raise InvalidInputError("--hr-* options set the hires fix; add --hires to turn it on")
    check_subseed_strength(args.subseed_strength)
    hires = HiresFix(**given) if args.hires else None
    check_hires(hires, init_image)
    return {
        "subseed": args.subseed,
        "subseed_strength": args.subseed_strength,
        "seed_resize_from_w": resize_w,
        "seed_resize_from_h": resize_h,
        "randn_source": args.rng,
        "hires": hires,
    }
