"""What our long-running processes set up first (broker/process_setup.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from byzerllm.broker.process_setup import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_young_generation_is_collected_less_often(thresholds):
    gc.set_threshold(700, 9, 8)  # CPython's default young threshold
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 9, 8)


@pytest.mark.parametrize("chosen", [(0, 10, 10), (50_000, 5, 5)])
def test_a_setting_already_chosen_is_kept(thresholds, chosen):
    """Collection turned off, or a higher threshold, is someone's choice: left alone."""
    gc.set_threshold(*chosen)
    tune_gc()
    assert gc.get_threshold() == chosen
