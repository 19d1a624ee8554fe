"""The policy's part of a tick: tokenize → infer → decode, each stage timed, with why it produced nothing.

It never raises for what a policy or a reading can do wrong at run time: a reading the model's spec cannot
take, non-finite logits and an inference slower than its deadline each come back as a typed `Cause`, for
the guard to turn into a hold or a FAULT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.tokenizer.observation import ObservationError
from runtime.inference.loader import LoadedPolicy
from runtime.link import Inputs
from runtime.safety.causes import Cause, CauseKind
from runtime.timing import StageTimer


@dataclass(frozen=True, eq=False)
class PolicyOutput:
    action: np.ndarray | None  # physical action (A,), before the safety filter; None when `cause` says why not
    cause: Cause | None = None


class PolicyStep:
    def __init__(
        self,
        policy: LoadedPolicy,
        instruction: str,
        decode: str,
        deadline_ms: float,
        timer: StageTimer,
        *,
        decode_seed: int = 0,
    ):
        self.policy, self.instruction, self.decode, self.deadline_ms = policy, instruction, decode, deadline_ms
        # the sampled decodings draw from this generator: a run (a pac-eval episode: its seed) replays exactly
        self.rng = np.random.default_rng(decode_seed)
        self.cameras = policy.metadata.observation.cameras
        self.objects = bool(policy.metadata.observation.objects)  # the policy reads object poses
        self.timer = timer
        self.inferences = 0

    def __call__(self, inputs: Inputs) -> PolicyOutput:
        """The action for `inputs` (which hold a state, a frame per camera and, for a policy reading object
        poses, an objects message: the guard checked; an object the tracker does not see is a BAD_OBSERVATION)."""
        frames = {c: inputs.frames[c].image for c in self.cameras}
        with self.timer.section("tokenize"):
            poses = inputs.objects.as_dict() if self.objects and inputs.objects is not None else None
            try:
                obs = self.policy.tokenizer.from_messages(inputs.state, frames, self.instruction, poses)
            except ObservationError as exc:
                return PolicyOutput(None, Cause(CauseKind.BAD_OBSERVATION, detail=str(exc)))
        with self.timer.section("infer"):
            logits = self.policy.infer(obs)
        self.inferences += 1
        if not np.isfinite(logits).all():
            return PolicyOutput(None, Cause(CauseKind.NON_FINITE, "policy_output"))
        if self.timer.last("infer") > self.deadline_ms:
            return PolicyOutput(None, Cause(CauseKind.INFERENCE_DEADLINE))
        with self.timer.section("decode"):
            return PolicyOutput(self.policy.action(logits, self.decode, self.rng))
