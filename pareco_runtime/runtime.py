"""SlimmableRuntime: one weight file, a front of sub-networks, budget-driven selection and switching."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import backends
from .budget import BatteryPolicy, Budget, Choice, as_budget, choose
from .inputs import InputSpec
from .manifest import DeviceProfile, Front, FrontPoint, load_front_weights
from .model_check import build_front_model
from .models.base import SlimmableNet
from .preprocess import Preprocess, is_image
from .slicing import slice_model
from .sources import ModelFactory
from .untrusted import FormatError, first_line

BudgetLike = str | Budget | Sequence[str | Budget]


class _ReadWriteLock:
    """Many concurrent readers (inferences) or one writer (a switch); a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class SlimmableRuntime:
    """A slimmable model with its front, ready to serve under a budget.

    ``select(budget)`` is a pure lookup; ``switch(budget)`` makes the chosen point active in place
    (channel counts and that point's calibrated BN statistics, preloaded, swapped by reference:
    nothing is allocated). ``rt(x)`` runs the active sub-network under ``torch.inference_mode``.
    Switching and inference are synchronised by a read-write lock, so an inference running in
    another thread always sees one whole config, never a mix of two. ``rt.front`` is the loaded
    manifest (:class:`~pareco_runtime.manifest.Front`); ``points`` and ``profiles`` are its own.

    On a compiled ``backend`` (``"onnxruntime"``, ``"executorch"``: :mod:`~pareco_runtime.backends`)
    ``rt(x)`` runs the active point's exported program instead, loaded on the first switch to the
    point (or for all points at load with ``preload``) and kept; ``select``, ``switch``, the input
    checks and the lock are the same, and the shared weights stay loaded (they slice the points'
    programs and serve :meth:`standalone`).
    """

    def __init__(
        self,
        model: SlimmableNet,
        front: Front,
        bn_stats: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
        policy: BatteryPolicy | None = None,
        backend: str = backends.TORCH,
        threads: int | None = None,
        preload: bool = False,
    ) -> None:
        self.model = model.eval()
        # The builder of a user-code architecture this front was loaded with (load's ``model``), so
        # that the same front can be loaded again on another backend.
        self.model_factory: ModelFactory | None = None
        self.front = front
        self.policy = policy or BatteryPolicy()
        self.backend = backend
        self.threads = threads
        self._stats = bn_stats
        self._channels = {p.id: model.space.channels(p.alpha) for p in self.points}
        dataset = front.dataset.to_dict()
        self._preprocess = Preprocess.from_dataset(dataset) if is_image(dataset["input_size"]) else None
        self._input_specs = (
            InputSpec.of(front.dataset.input_size, front.dataset.input_dtype, model),
            *model.input_specs[1:],
        )
        self._lock = _ReadWriteLock()
        self._loader = None if backend == backends.TORCH else backends.program_loader(backend)
        self._programs: dict[str, backends.Program] = {}
        self._loading = threading.Lock()
        self._program: backends.Program | None = None
        self.active = max(self.points, key=lambda p: p.mflops)
        for p in self.points if preload else [self.active]:
            self._ensure_program(p)
        self._activate(self.active)

    @classmethod
    def load(
        cls,
        manifest_path: str | Path,
        device: str | torch.device = "cpu",
        policy: BatteryPolicy | None = None,
        verify_hash: bool = True,
        model: ModelFactory | None = None,
        backend: str = backends.TORCH,
        threads: int | None = None,
        preload: bool = False,
    ) -> SlimmableRuntime:
        """Load a front manifest and its weight file; ``backend`` runs the points (torch, or a compiled
        runtime: onnxruntime, executorch, at ``threads`` intra-op threads, their programs loaded on
        first use or all now with ``preload``).

        Validates the manifest (schema, format version, sizes, weight path inside its folder), checks
        the weight file's SHA-256, checks that the architecture fits the weight file's header before
        building it (:func:`~pareco_runtime.model_check.build_front_model`: tensor names, shapes and
        dtypes, each point's BN statistics), reads the weights with safetensors (no pickle) and
        preloads every point's BN statistics, those of points added after training from their
        statistics files (:mod:`~pareco_runtime.manifest.stats_files`: checked, with their SHA-256, to belong
        to this weight file). Errors are ``ValueError`` subclasses naming the file.
        ``model``: the builder of an architecture that is the user's own code (a front trained with
        ``--arch pkg.module:factory``); the manifest's name for it is never imported.
        """
        path = Path(manifest_path)
        front = Front.load(path, verify_weights=verify_hash)
        net = build_front_model(front, factory=model)
        wpath = front.weights_path
        wf = load_front_weights(front)
        try:
            # build_front_model checked the header; this fails only for a file replaced since.
            net.load_state_dict(wf.state, strict=True)
        except RuntimeError as exc:
            raise FormatError(
                f"{wpath}: weights do not fit architecture '{front.architecture.arch}' ({first_line(exc)}); "
                "use the weight file trained with this manifest"
            ) from None
        net.to(device)
        stats = {
            p.id: [(m.to(device), v.to(device)) for m, v in (wf.bn_stats[p.id][n] for n in net.bn_names)]
            for p in front.points
        }
        runtime = cls(net, front, stats, policy, backend=backend, threads=threads, preload=preload)
        runtime.model_factory = model
        return runtime

    @property
    def points(self) -> list[FrontPoint]:
        """The front's points (those of :attr:`front`)."""
        return self.front.points

    @property
    def profiles(self) -> list[DeviceProfile]:
        """The front's device profiles (those of :attr:`front`, so figures it records are seen by :meth:`select`)."""
        return self.front.device_profiles

    @property
    def manifest(self) -> dict[str, Any]:
        """The front as a manifest dict (a fresh copy: edit :attr:`front` instead)."""
        return self.front.to_dict()

    @property
    def manifest_path(self) -> Path | None:
        """The manifest file the front was loaded from."""
        return self.front.path

    @property
    def input_size(self) -> tuple[int, ...]:
        """Expected input without the batch: (C, H, W) images, (C, L) sequences, (T,) token ids."""
        return tuple(self.front.dataset.input_size)

    @property
    def input_spec(self) -> InputSpec:
        """The (first) input :meth:`__call__` takes: :attr:`input_size` and the manifest's dtype
        (float32, or token ids bounded by the network's embedding tables)."""
        return self._input_specs[0]

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """Every input :meth:`__call__` takes, in the network's ``forward`` order: :attr:`input_spec`,
        then those of a network converted with several (as its conversion recorded them)."""
        return self._input_specs

    @property
    def class_names(self) -> list[str]:
        """Class names in output order."""
        return list(self.front.dataset.class_names)

    def point(self, point_id: str) -> FrontPoint:
        """The point with this id (ValueError listing the ids if unknown)."""
        for p in self.points:
            if p.id == point_id:
                return p
        raise ValueError(
            f"no point '{point_id}' in this front; its points are {', '.join(p.id for p in self.points)}"
        )

    def own_point(self, point: FrontPoint) -> FrontPoint:
        """This front's point that ``point`` is: itself when it is one of :attr:`points`, else the point
        of its id if every field is equal (a copy). A point of another front, whose id this front
        also uses but whose widths or figures differ, is refused with a ValueError, so that
        :attr:`active` always describes the sub-network that runs."""
        if any(p is point for p in self.points):
            return point
        own = self.point(point.id)
        if own != point:
            raise ValueError(
                f"point '{point.id}' is not this front's: this front's point of that id has other "
                f"widths or figures (alpha {own.alpha} vs {point.alpha}); pass one of rt.points or its id"
            )
        return own

    def select(
        self, budget: BudgetLike, fallback: str | None = None, allow_predicted: bool = False
    ) -> FrontPoint:
        """The most accurate point meeting ``budget`` (a string, a Budget, or a list of them, ANDed).

        Pure: the active point is unchanged. Unmet budgets raise ``BudgetUnmetError`` naming the
        cheapest point, unless ``fallback="cheapest"``.
        """
        return self.choose(budget, fallback, allow_predicted, precision="fp32").point

    def choose(
        self,
        budget: BudgetLike,
        fallback: str | None = None,
        allow_predicted: bool = False,
        precision: str | None = None,
    ) -> Choice:
        """The best program by the front's metric meeting ``budget`` among the points in fp32 and their quantized
        variants (:func:`pareco_runtime.budget.choose`; ``precision`` "fp32" or "int8" restricts it).

        For deciding what to ship: :meth:`switch` serves fp32 points only, and an int8 variant runs
        from its exported program (``pareco export --int8``) in its own runtime.
        """
        return choose(
            self.points,
            as_budget(budget),
            profiles=[p.name for p in self.profiles],
            policy=self.policy,
            fallback=fallback,
            allow_predicted=allow_predicted,
            precision=precision,
            metric=self.front.metric,
        )

    def switch(
        self, target: BudgetLike | FrontPoint, fallback: str | None = None, allow_predicted: bool = False
    ) -> FrontPoint:
        """Make the point chosen for ``target`` (a budget, or a FrontPoint of this front: see :meth:`own_point`)
        active, in place; returns that point, this front's own object."""
        point = (
            self.own_point(target)
            if isinstance(target, FrontPoint)
            else self.select(target, fallback, allow_predicted)
        )
        if point is not self.active:
            self._ensure_program(point)  # before the lock: loading may export, which slices the model
            with self._lock.write():
                self._activate(point)
        return point

    def _ensure_program(self, point: FrontPoint) -> None:
        """Load ``point``'s program on a compiled backend, once (nothing on the torch backend)."""
        if self._loader is None:
            return
        with self._loading:
            if point.id not in self._programs:
                self._programs[point.id] = self._loader(self, point, self.backend, self.threads)

    def _activate(self, point: FrontPoint) -> None:
        if self._loader is None:
            self.model.activate(self._channels[point.id], point.alpha, self._stats[point.id])
        else:
            self._program = self._programs[point.id]
        self.active = point

    def __call__(self, *inputs: Any) -> Any:
        """The active sub-network's output for a batch of :attr:`input_spec` (``(N, C, H, W)`` float32
        images, ``(N, T)`` int64 token ids, ...); a network of several inputs takes a batch of each,
        in its ``forward``'s order (:attr:`input_specs`). A network converted in parts takes what its
        original takes (a detector: a list of images), which its own ``forward`` checks."""
        if self.model.takes_batches:
            self._check_inputs(inputs)
        with self._lock.read(), torch.inference_mode():
            return self.model(*inputs) if self._program is None else self._program(*inputs)

    def _check_inputs(self, inputs: tuple[Any, ...]) -> None:
        specs = self._input_specs
        if len(inputs) != len(specs):
            raise TypeError(
                f"this front's network takes {len(specs)} input{'s' if len(specs) > 1 else ''} "
                f"({', '.join(s.describe() for s in specs)}), got {len(inputs)}"
            )
        hint = (
            "resize and normalise images as the manifest's dataset section says"
            if self._preprocess is not None
            else "normalise the features as the manifest's dataset section says"
            if specs[0].is_float
            else "give windows of exactly the front's context length (pad or cut the ids)"
        )
        for i, (x, spec) in enumerate(zip(inputs, specs)):
            spec.check(x, hint if i == 0 else "give every input at the shape the network was converted at")
        batches = {int(x.shape[0]) for x in inputs}
        if len(batches) > 1:
            raise ValueError(f"inputs have batches {sorted(batches)}; give one batch size for every input")

    def preprocess(self, image: Any) -> torch.Tensor:
        """``image`` (a PIL image, or uint8 RGB ``(3, H, W)`` / ``(H, W, 3)``) as the ``(1, C, H, W)``
        input the network was evaluated on: the manifest's resize, crop and normalisation. A network
        of ``[C, L]`` sequences takes no image: ``ValueError``."""
        if self._preprocess is None:
            raise ValueError(
                f"this front's network takes inputs of shape {self.input_size}, not images; give it "
                "normalised tensors of that shape"
            )
        return self._preprocess(image)

    def predict(self, image: Any) -> tuple[str, float]:
        """The class name (its index as text when the manifest names none) and softmax score the
        active point gives ``image`` (preprocessed with :meth:`preprocess`)."""
        probs = torch.softmax(self(self.preprocess(image))[0].float(), dim=0)
        score, index = probs.max(dim=0)
        names = self.class_names
        return (names[int(index)] if int(index) < len(names) else str(int(index))), float(score)

    def standalone(self, point: FrontPoint | str) -> nn.Module:
        """The point as a standalone model that needs only torch (:func:`slice_model`: a ``GraphModule`` of
        torch layers holding the sliced tensors and the point's BN statistics), in eval mode."""
        p = self.point(point) if isinstance(point, str) else self.own_point(point)
        with self._lock.write():
            return slice_model(self.model, p.alpha, bn_stats=self._stats[p.id]).eval()

    def bn_stats(self, point: FrontPoint | str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The calibrated BN statistics of a point, in the model's BN order."""
        return self._stats[point if isinstance(point, str) else point.id]
