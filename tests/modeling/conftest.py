"""Fixtures shared by the modeling tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny ops run faster single-threaded, especially when the CI machine's 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
