"""qpass::hadamard: the Triton fast Walsh–Hadamard kernel (interpreter) and the op vs the pure-torch reference,
on random non-zero inputs, M = 1, row tails, and lengths m·2^k with a small orthogonal mix (non-powers of two)."""
import pytest
import torch

from qpass.kernels import ops  # noqa: F401  (registers qpass::hadamard)
from qpass.kernels.hadamard import fwht
from qpass.kernels.hadamard.reference import hadamard_ref, sylvester


def _orthogonal(m, seed=0):
    q, _ = torch.linalg.qr(torch.randn(m, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float().contiguous()


@pytest.mark.parametrize("rows,p", [(1, 2), (1, 64), (7, 16), (65, 128), (3, 1024)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fwht_kernel_matches_dense_hadamard(rows, p, dtype):
    x = torch.randn(rows, p, generator=torch.Generator().manual_seed(rows + p)).to(dtype)
    y = fwht.fwht_rows(x)
    want = (x.double() @ sylvester(p, torch.float64)) / p ** 0.5
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol)
    assert y.dtype == dtype


@pytest.mark.parametrize("shape,m", [((1, 1, 96), 3), ((2, 5, 172), 43), ((4, 48), 12), ((3, 256), 1)])
def test_triton_path_with_mix_matches_reference(shape, m):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(m))
    mix = _orthogonal(m) if m > 1 else None
    torch.testing.assert_close(fwht.run(x, mix), hadamard_ref(x, mix), rtol=1e-5, atol=1e-5)


def test_transform_is_orthogonal_and_op_runs_reference_on_cpu():
    x = torch.randn(5, 172, generator=torch.Generator().manual_seed(1))
    mix = _orthogonal(43)
    y = torch.ops.qpass.hadamard(x, mix)
    torch.testing.assert_close(y, hadamard_ref(x, mix))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)  # a rotation
    # the explicit matrix: x @ kron(mix, H/√p)
    dense = torch.kron(mix.double().contiguous(), sylvester(4, torch.float64) / 2)
    torch.testing.assert_close(y.double(), x.double() @ dense, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        torch.ops.qpass.hadamard(torch.randn(2, 24), None)
    with pytest.raises(RuntimeError, match="multiple of mix"):
        torch.ops.qpass.hadamard(torch.randn(2, 24), torch.eye(5))
    with pytest.raises(ValueError, match="x must be one of"):
        torch.ops.qpass.hadamard(torch.ones(2, 8, dtype=torch.int32), None)
