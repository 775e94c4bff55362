"""A sweep: its file, the Ray Tune run that searches it, and what it logs.

- `spec`: what a sweep declares (`SweepSpec`: base trial, search space, Tune settings).
- `sweep_file`: a sweep file (YAML) read and checked into a `SweepSpec`, every trial it can
  sample validated before Ray starts.
- `folder`: the sweep folder STORAGE/NAME: claimed, saved beside the results, found again.
- `tuner`: the Tune trainable (`train_trial`), Tune's configs, the teachers prepared once.
- `schedulers`, `searchers`: `sweep.scheduler` and `sweep.searcher` by name.
- `tracking`, `tracking_callbacks`: csv, TensorBoard, MLflow and W&B through Tune's callbacks.
- `ray_start`: joining or starting the Ray cluster a sweep runs on.

May import: every package below it, `kdray.training` included. The names below are imported on
first use.
"""

from typing import TYPE_CHECKING

from kdray.base.lazy import lazy_exports

if TYPE_CHECKING:  # the names _EXPORTS re-exports, for type checkers
    from kdray.search.spec import SweepSpec  # noqa: F401
    from kdray.search.sweep_file import load_spec, parse_sweep  # noqa: F401


_EXPORTS = {
    "kdray.search.spec": ("SweepSpec",),
    "kdray.search.sweep_file": ("load_spec", "parse_sweep"),
}  # fmt: skip
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
