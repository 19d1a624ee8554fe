"""One optimiser step of the online network, the target network's copies, and the state a resume needs.

The Learner owns the online model (wrapped in DistributedDataParallel when torch.distributed is
initialised: gloo on the CPU, nccl on a GPU, started by `torchrun`), the target model, AdamW and the
generator that samples actions for the objective. Its `state_tensors()`/`load_state_tensors()` are all of
that as named tensors (checkpoint.py writes them as safetensors), so a resumed run computes bit for bit
what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
import torch.distributed as dist
from torch import nn

from policies.model.perceiver import PerceiverActorCritic
from policies.train.config import TrainConfig
from policies.train.objective import ConservativeTerm, PolicyCriticLoss, Targets, targets
from policies.train.schedule import learning_rate


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and conv kernels only; never on biases, norms, embeddings of one row each."""
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters()):
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Learner:
    def __init__(self, config: TrainConfig, model: PerceiverActorCritic, device: torch.device, rank: int = 0):
        self.config, self.device = config, device
        algo = config.algorithm
        self.model = model.to(device)
        self.target = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.alpha_per_dim = config.alpha_per_dim(model.action_spec.dims)
        dims = model.action_spec.dims
        self.local_loss = PolicyCriticLoss(
            self.model,
            algo.alpha,
            algo.beta,
            self.alpha_per_dim,
            config.critic_gradient,
            dims,
            self._conservative_term(config, dims),
        )
        self.loss: nn.Module = self.local_loss
        self.distributed = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if self.distributed else 1
        if self.distributed:
            # BC trains no critic: its parameters get no gradient, which DDP must be told.
            self.loss = nn.parallel.DistributedDataParallel(self.loss, find_unused_parameters=not algo.critic)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay), lr=config.lr_init, betas=(0.9, 0.999), eps=1e-8
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + rank)
        self.step = 0  # optimiser steps taken
        self.td_errors: torch.Tensor | None = None  # (B,) the last step's TD error per transition (a critic's)
        amp = config.amp if config.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _targets(self, batch) -> Targets:
        c, algo = self.config, self.config.algorithm
        return targets(
            self.target,
            batch.observation,
            batch.next_observation,
            batch.reward,
            batch.discount,
            critic=algo.critic,
            improve=min((algo.alpha, *self.alpha_per_dim)) < 1.0 or c.conservative > 0.0,
            eta=c.eta,
            eta_per_state=c.eta_mode == "per_state",
            improvement_cvar=c.improvement_cvar,
            improvement_samples=c.improvement_samples,
            target_samples=c.target_samples,
            generator=self.generator,
            advantage=c.bc_data == "advantage",
        )

    def _conservative_term(self, config: TrainConfig, dims: tuple[str, ...]) -> ConservativeTerm | None:
        if config.conservative <= 0.0:
            return None
        keep = ()
        if config.conservative_dims == "improved":  # the dimensions the improvement leaves alone (α_d = 1) kept
            alphas = self.alpha_per_dim or (config.algorithm.alpha,) * len(dims)
            keep = tuple(a >= 1.0 for a in alphas)
        elif config.conservative_dims == "gripper":  # the arm's velocities kept, whatever the improvement trains
            keep = tuple(d != "gripper" for d in dims)
        return ConservativeTerm(config.conservative, config.conservative_samples, keep)

    def _bc_mask(self, batch, t: Targets) -> torch.Tensor | None:
        """The transitions the BC term clones (TrainConfig.bc_data); None: all of them."""
        if self.config.bc_data == "all":
            return None
        if self.config.bc_data == "advantage":
            return t.advantage > 0.0
        if batch.success is None:
            raise ValueError("bc_data='successes' needs batches that say which episodes succeeded")
        return batch.success

    def train_step(self, batch) -> dict[str, float]:
        """One optimiser step on `batch` (already on the device); returns its losses and diagnostics."""
        c = self.config
        started = time.perf_counter()
        lr = learning_rate(self.step, c.steps, c.warmup_steps, c.lr_init, c.lr_peak, c.lr_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with self._autocast():
            t = self._targets(batch)
            losses = self.loss(
                batch.observation, batch.action, t, self._bc_mask(batch, t), batch.critic_action, batch.weight
            )
        self.td_errors = losses.pop("td_error", None)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.config.algorithm.critic and self.step % c.target_period == 0:
            self.target.load_state_dict(self.model.state_dict())
        out = _floats(losses)
        out.update(grad_norm=float(grad_norm), lr=lr, step_s=time.perf_counter() - started)
        if t.advantage is not None:  # the share of the batch the BC term clones
            out["bc_kept"] = float((t.advantage > 0.0).float().mean())
        if t.improve_weights is not None:  # how many sampled actions the improvement really uses
            w = t.improve_weights
            out["ess"] = float((1.0 / (w**2).sum(dim=-1)).mean())
            out["q_spread"] = float(t.q_spread.mean())
        return out

    @torch.no_grad()
    def evaluate(self, batch) -> dict[str, float]:
        """The losses on a held-out batch, without a step (the sampled actions use their own generator)."""
        self.model.eval()
        saved = self.generator.get_state()
        with self._autocast():
            t = self._targets(batch)
            # the unwrapped module: DDP's forward would broadcast buffers, a collective only this rank joins
            losses = self.local_loss(batch.observation, batch.action, t, self._bc_mask(batch, t), batch.critic_action)
            losses.pop("td_error", None)
        self.generator.set_state(saved)  # evaluating must not change what training samples next
        return _floats(losses)

    # ---------------------------------------------------------------- state for checkpoints
    def state_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Everything a resume needs, as groups of named CPU tensors."""
        optim = self.optimizer.state_dict()
        optimizer = {
            f"{index}.{key}": value.detach().cpu().clone()
            for index, state in optim["state"].items()
            for key, value in state.items()
        }
        return {
            "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "target": {k: v.detach().cpu().contiguous() for k, v in self.target.state_dict().items()},
            "optimizer": optimizer,
            "rng": self.rng_state(),
            "scaler": {
                k: torch.as_tensor(v) for k, v in self.scaler.state_dict().items() if isinstance(v, float | int)
            },
        }

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random state: torch's and the objective's generator (each DDP rank has its own)."""
        rng = {"torch_cpu": torch.get_rng_state(), "sampler": self.generator.get_state().cpu()}
        if self.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def load_state_tensors(self, groups: dict[str, dict[str, torch.Tensor]], step: int) -> None:
        self.model.load_state_dict(groups["model"])
        self.target.load_state_dict(groups["target"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in groups["optimizer"].items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        optim = self.optimizer.state_dict()
        optim["state"] = state
        self.optimizer.load_state_dict(optim)
        torch.set_rng_state(groups["rng"]["torch_cpu"])
        self.generator.set_state(groups["rng"]["sampler"].to(self.generator.get_state().device))
        if "torch_cuda" in groups["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(groups["rng"]["torch_cuda"], self.device)
        if groups.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict({k: v.item() for k, v in groups["scaler"].items()})
        self.step = step


def _floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses as Python floats, in one device-to-host copy (a float() each would wait on a GPU ~10 times)."""
    values = torch.stack([v.detach().float() for v in losses.values()]).tolist()
    return dict(zip(losses, values, strict=True))
