"""The report's compute comparison: a ratio when the from-scratch baseline reached AltCLIP-mini's
Chinese R@1, only an upper bound when it stopped short."""

from altdiffusion.mini.report import compute_summary


def build_log(reached: bool) -> dict:
    curve = [
        {"steps": 250, "cpu_s": 500.0, "zh_r1": 0.4},
        {"steps": 500, "cpu_s": 1000.0, "zh_r1": 0.9 if reached else 0.6},
    ]
    scratch = {"target_zh_r1": 0.9, "curve": curve, "done": True} | ({"reached": True} if reached else {})
    stages = {"teacher": {"cpu_s": 900.0}, "distill": {"cpu_s": 150.0}, "altclip": {"cpu_s": 100.0}}
    return {"stages": stages, "scratch": scratch}


def test_a_baseline_that_reached_the_target_gives_the_ratio():
    c = compute_summary(build_log(reached=True))
    assert c["altclip_cpu_s"] == 250.0 and c["scratch_cpu_s"] == 1000.0
    assert c["altclip_over_scratch"] == 0.25 and c["altclip_over_scratch_below"] is None
    assert c["with_teacher_over_scratch"] == 1.15  # (900 + 250) / 1000: the teacher's cost counted


def test_a_baseline_that_stopped_short_gives_only_a_bound():
    c = compute_summary(build_log(reached=False))
    assert c["altclip_over_scratch"] is None and c["altclip_over_scratch_below"] == 0.25
    assert c["with_teacher_over_scratch"] is None and c["with_teacher_over_scratch_below"] == 1.15
    assert not c["scratch_reached"]


def test_the_curve_plot_marks_the_baseline_and_both_costs():
    from altdiffusion.mini.plots import scratch_curve_plot

    image = scratch_curve_plot(compute_summary(build_log(reached=True))).convert("RGB")
    colours = {rgb for _, rgb in image.getcolors(maxcolors=1 << 16)}
    assert (0, 0, 255) in colours and (255, 0, 0) in colours  # the baseline's line, AltCLIP-mini's costs
    # the last point (1000 CPU s, 90%) is drawn where the axes put it
    x = 60 + 1000 / (1150 * 1.05) * (640 - 80)
    y = 400 - 50 - 0.9 * (400 - 80)
    assert image.getpixel((round(x), round(y))) == (0, 0, 255)


def test_no_build_log_no_comparison():
    assert compute_summary(None) is None and compute_summary({}) is None


def curve_of(r1s: list[float]) -> list[dict]:
    return [{"steps": 500 * (k + 1), "cpu_s": 400.0 * (k + 1), "zh_r1": r} for k, r in enumerate(r1s)]


def test_the_baseline_stops_when_a_doubling_of_its_training_gains_under_a_point():
    from altdiffusion.mini.build import plateaued

    rising = [0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.74, 0.76]  # still 4 points up over the last doubling
    noisy_flat = [0.3, 0.6, 0.8, 0.85, 0.84, 0.855, 0.83, 0.85]  # noise around a level it had reached
    assert not plateaued(curve_of(rising))
    assert plateaued(curve_of(noisy_flat))
    assert not plateaued(curve_of(noisy_flat[:6]))  # too short a curve to call


def test_a_plateaued_baseline_is_reported_as_such():
    from altdiffusion.mini.report import compute_markdown

    log = build_log(reached=False)
    log["scratch"]["plateaued"] = True
    text = compute_markdown(compute_summary(log))
    assert "< 0.25" in text and "plateaued below the target" in text
    assert "stopped short" in compute_markdown(compute_summary(build_log(reached=False)))
