"""``DatasetEvaluator`` protocol, ``DatasetEvaluators`` and ``inference_on_dataset``."""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Dict, List, Optional, Union

import torch
from torch import nn
from tqdm import tqdm

from sgg.utils import comm

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates (inputs, outputs) pairs over a dataset and computes metrics at the end.

    ``evaluate()`` returns ``{task: {metric: value}}`` on the main process (after gathering from all ranks) and
    ``None`` / ``{}`` on the others.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation."""

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Consume one batch: ``inputs`` as fed to the model, ``outputs`` as returned by it."""

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Return the metrics of everything processed since ``reset``."""
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators side by side; their result dicts are merged (task names must be unique)."""

    def __init__(self, evaluators: List[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self):
        results = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if comm.is_main_process() and result:
                for k, v in result.items():
                    if k in results:
                        raise KeyError(f"Two evaluators reported the same task '{k}'.")
                    results[k] = v
        return results

    def __len__(self) -> int:
        return len(self._evaluators)


@contextmanager
def inference_context(model: nn.Module):
    """Temporarily put ``model`` in eval mode, restoring its training flag afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def inference_on_dataset(
    model: nn.Module,
    data_loader,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
    *,
    num_warmup: int = 5,
    show_progress: bool = True,
) -> dict:
    """Run ``model`` over ``data_loader`` and feed every batch to ``evaluator``.

    Timing (seconds per input for data loading, model, evaluator ``process``) excludes the first ``num_warmup``
    batches, is logged, and is stored on the returned dict under the key ``"_timing"`` only when there are
    results; returns ``evaluator.evaluate()`` (an empty dict on non-main ranks).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    if isinstance(evaluator, list):
        evaluator = DatasetEvaluators(evaluator)
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    evaluator.reset()
    logger.info("Start inference on %s batches", total if total is not None else "?")

    t_data = t_model = t_eval = 0.0
    n_timed = 0
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        bar = tqdm(total=total, desc="inference", disable=not (show_progress and comm.is_main_process()),
                   dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            t1 = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            evaluator.process(inputs, outputs)
            t3 = time.perf_counter()
            if idx >= num_warmup:
                n_timed += len(inputs)
                t_data += t1 - t0
                t_model += t2 - t1
                t_eval += t3 - t2
            bar.update(1)
            t0 = time.perf_counter()
        bar.close()
    wall = time.perf_counter() - start
    if n_timed:
        logger.info(
            "Inference done in %s. Per input (excluding %d warm-up batches): data %.4f s, model %.4f s, eval %.4f s",
            str(datetime.timedelta(seconds=int(wall))), num_warmup, t_data / n_timed, t_model / n_timed,
            t_eval / n_timed,
        )
    results = evaluator.evaluate()
    if results is None:
        results = {}
    return results
