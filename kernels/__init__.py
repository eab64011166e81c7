"""Triton kernels of the StarPose sampler, one op per file, each matching an eager reference in engine/.

- ``denoiser_block``: one fused GCN-Attention block (engine.core.denoiser.GCNAttentionBlock).
- ``denoiser_step``: the whole denoiser of a DDIM step, all blocks in one launch (engine.core.denoiser.Denoiser).
- ``stpg_grad``: the STPG energy gradient for all hypotheses (engine.core.guidance.stpg_grad).
- ``ddim_update``: x0 prediction + STPG step + DDIM next state (engine.core.sampler.sample_frame loop body).
- ``backend``: TritonBackend, the ``triton`` backend (engine.core.backend registry).

Without a GPU the kernels run only under ``TRITON_INTERPRET=1``, which must be set before this
package is imported (Triton reads it when ``@triton.jit`` runs).

Import the launchers from their modules (``from kernels.stpg_grad import stpg_grad``): the
package does not re-export them, so ``kernels.stpg_grad`` always names the module.
"""
