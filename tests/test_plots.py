"""Front plots: one or several fronts overlaid, a panel per cost axis, lines broken at gaps, the chance line,
and ``pareco show A B [--plot]`` (one table per front, a list in --json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.plots import chance_drawn, line_runs, plot_fronts
from pareco_runtime.manifest import DeviceProfile, Front

from .manifests import make_manifest


def _front(
    folder: str,
    algorithm: str = "pareco",
    mflops: tuple[float, ...] = (10.0, 11.0, 12.0, 13.0),
    profiles: tuple[str, ...] = ("cpu1",),
    top1: tuple[float, ...] = (80.0, 81.0, 82.0, 83.0),
    classes: int = 10,
) -> Front:
    """A front of ``make_manifest``'s points at the given costs and top-1, with a latency per profile."""
    d = make_manifest(n_points=len(mflops))
    d["training"]["algorithm"] = algorithm
    d["dataset"]["class_names"] = [f"c{i}" for i in range(classes)]
    template = d["device_profiles"][0]
    d["device_profiles"] = [{**template, "name": name} for name in profiles]
    for p, m, t in zip(d["points"], mflops, top1):
        p["mflops"], p["top1"] = m, t
        p["latency_ms"] = {name: m / (k + 2) for k, name in enumerate(profiles)}
        p["energy_mj"] = {}
    return Front.from_dict(d, Path(folder) / "model.front.json")


def _solid_lines(ax) -> int:
    return sum(1 for line in ax.get_lines() if line.get_linestyle() == "-")


class TestLineRuns:
    def test_neighbours_within_three_times_are_one_run(self) -> None:
        assert line_runs([1.0, 2.5, 7.0, 20.0]) == [[0, 1, 2, 3]]

    def test_a_gap_of_more_than_three_times_breaks_the_line(self) -> None:
        assert line_runs([1.0, 2.0, 6.5, 7.0, 40.0]) == [[0, 1], [2, 3], [4]]

    def test_exactly_three_times_is_no_gap_and_the_ratio_is_a_parameter(self) -> None:
        assert line_runs([1.0, 3.0]) == [[0, 1]]
        assert line_runs([1.0, 3.0], ratio=2.0) == [[0], [1]]

    def test_no_points_no_runs_and_a_zero_cost_stands_alone(self) -> None:
        assert line_runs([]) == []
        assert line_runs([0.0, 0.5, 1.0]) == [[0], [1, 2]]

    def test_the_plot_draws_one_line_per_run_and_a_marker_per_point(self) -> None:
        fig = plot_fronts([_front("a", mflops=(1.0, 2.0, 10.0, 11.0), profiles=())])
        ax = fig.axes[0]
        assert _solid_lines(ax) == 2  # 2 -> 10 MFLOPs is a gap of 5x
        markers = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert [len(line.get_xdata()) for line in markers] == [4]
        assert sorted(t.get_text() for t in ax.texts if t.get_text().startswith("p")) == [
            "p0",
            "p1",
            "p2",
            "p3",
        ]

    def test_an_off_front_point_is_hollow_and_off_the_line(self) -> None:
        front = _front("a", mflops=(10.0, 11.0, 12.0, 13.0), profiles=())
        front.points[1].origin = "calibrated"
        ax = plot_fronts([front]).axes[0]
        (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert list(line.get_xdata()) == [10.0, 12.0, 13.0]
        hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
        assert [list(line.get_xdata()) for line in hollow] == [[11.0]]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["pareco (a)", "pareco (a), off-front (pareco calibrate)"]


class TestPanels:
    def test_one_panel_for_mflops_and_one_per_profile_sharing_top1(self) -> None:
        fig = plot_fronts([_front("a", profiles=("cpu1", "pixel7"))])
        assert len(fig.axes) == 3
        assert [ax.get_xlabel() for ax in fig.axes] == [
            "MFLOPs (multiply-accumulates)",
            "latency (ms), cpu1",
            "latency (ms), pixel7",
        ]
        assert all(fig.axes[0].get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes[1:])

    def test_profiles_of_all_fronts_are_panels_on_a_grid_of_three_columns(self) -> None:
        a = _front("a", profiles=("cpu1", "pixel7"))
        b = _front("b", algorithm="slim", profiles=("cpu1", "iphone15", "jetson"))
        fig = plot_fronts([a, b])
        assert len(fig.axes) == 5  # MFLOPs + cpu1, pixel7, iphone15, jetson; the sixth cell is removed
        rows = {round(ax.get_position().y0, 2) for ax in fig.axes}
        assert len(rows) == 2
        pixel7 = next(ax for ax in fig.axes if ax.get_xlabel().endswith("pixel7"))
        assert len([line for line in pixel7.get_lines() if line.get_marker() == "o"]) == 1, (
            "only a has pixel7"
        )

    def test_a_front_without_profiles_is_one_panel(self) -> None:
        assert len(plot_fronts([_front("a", profiles=())]).axes) == 1


class TestLegendAndChance:
    def test_each_front_is_labelled_with_its_algorithm_and_folder(self) -> None:
        fig = plot_fronts([_front("runs/pareco"), _front("runs/slim", algorithm="slim")])
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels == ["pareco (runs/pareco)", "slim (runs/slim)"]

    def test_given_labels_replace_them(self) -> None:
        fig = plot_fronts([_front("a"), _front("b")], labels=["PareCO", "Slim"])
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["PareCO", "Slim"]

    def test_chance_is_a_line_near_the_front_and_a_note_far_below_it(self) -> None:
        near = plot_fronts([_front("a", top1=(30.0, 35.0, 40.0, 45.0), classes=4)])
        assert "chance (25.0 %)" in [t.get_text() for t in near.axes[0].get_legend().get_texts()]
        far = plot_fronts([_front("a", top1=(70.0, 72.0, 75.0, 77.0), classes=10)])
        assert "chance (10.0 %)" not in [t.get_text() for t in far.axes[0].get_legend().get_texts()]
        assert all("chance 10.0 %, below the axis" in [t.get_text() for t in ax.texts] for ax in far.axes)

    def test_the_chance_rule(self) -> None:
        assert chance_drawn(25.0, [30.0, 40.0])  # 10 points of spread: drawn down to 10 %
        assert not chance_drawn(10.0, [70.6, 76.6])  # CIFAR-10 fronts: 0.3-point differences would vanish
        assert chance_drawn(49.5, [50.0, 50.0])  # one point: a spread of 1 at least

    def test_unknown_class_names_draw_no_chance(self) -> None:
        fig = plot_fronts([_front("a", classes=0)])
        assert not any("chance" in t.get_text() for ax in fig.axes for t in ax.texts)
        assert not any("chance" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


class TestRefusals:
    def test_fronts_of_different_datasets_are_refused(self) -> None:
        other = _front("b")
        other.dataset.name = "digits"
        with pytest.raises(ValueError, match=r"'digits' \(10 classes\).*'cifar10'.*not comparable"):
            plot_fronts([_front("a"), other])

    def test_fronts_of_different_class_counts_are_refused(self) -> None:
        with pytest.raises(ValueError, match=r"\(4 classes\).*\(10 classes\)"):
            plot_fronts([_front("a"), _front("b", classes=4)])

    def test_a_front_without_top1_is_refused(self) -> None:
        front = _front("a")
        for p in front.points:
            p.top1 = None
        with pytest.raises(ValueError, match="no point has a measured top-1"):
            plot_fronts([front])


def _second_front(front_copy: Path, tmp_path: Path, **dataset: str) -> Path:
    """A copy of the front in another folder, as trained by Slim (``dataset``: fields changed)."""
    folder = tmp_path / "slim-run"
    shutil.copytree(front_copy.parent, folder)
    manifest = folder / front_copy.name
    d = json.loads(manifest.read_text())
    d["training"]["algorithm"] = "twostage"
    d["dataset"].update(dataset)
    manifest.write_text(json.dumps(d))
    return manifest


class TestShowSeveral:
    def test_two_fronts_are_two_tables_and_one_png(self, front_copy: Path, tmp_path: Path, cli) -> None:
        other = _second_front(front_copy, tmp_path)
        with Front.update(front_copy) as f:
            f.record_profile(
                DeviceProfile("pixel7", "executorch", 1, 1, "Pixel 7", "2026-12-01"),
                {p.id: 1.0 + i for i, p in enumerate(f.points)},
            )
        png = tmp_path / "both.png"
        r = cli("show", str(front_copy), str(other.parent), "--plot", str(png))
        assert r.returncode == 0, r.stderr
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"plot written to {png} (2 panels)" in r.stdout
        assert r.stdout.count("front, ") == 2
        assert "(slim, " in r.stdout and "(twostage, " in r.stdout
        assert f"using {other}" in r.stderr

    def test_json_of_several_is_a_list_and_of_one_an_object(
        self, front_copy: Path, tmp_path: Path, cli
    ) -> None:
        other = _second_front(front_copy, tmp_path)
        several = json.loads(cli("show", str(front_copy), str(other), "--json").stdout)
        assert [d["manifest"] for d in several] == [str(front_copy), str(other)]
        assert [d["training"]["algorithm"] for d in several] == ["slim", "twostage"]
        one = json.loads(cli("show", str(front_copy), "--json").stdout)
        assert one["manifest"] == str(front_copy)

    def test_fronts_of_different_datasets_are_refused_before_any_output(
        self, front_copy: Path, tmp_path: Path, cli
    ) -> None:
        other = _second_front(front_copy, tmp_path, name="digits")
        png = tmp_path / "both.png"
        r = cli("show", str(front_copy), str(other), "--plot", str(png))
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith(f"error: {other}: top-1 on dataset 'digits'")
        assert "not comparable in one plot" in lines[-1]
        assert not png.exists() and r.stdout == ""
        assert cli("show", str(front_copy), str(other)).returncode == 0, "tables alone are fine"
