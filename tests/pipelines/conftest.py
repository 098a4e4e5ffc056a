import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny models run fastest on one thread; with several, OpenMP spinning on a busy CI
    machine makes each 50 ms run take seconds. Restored for the modules that follow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
