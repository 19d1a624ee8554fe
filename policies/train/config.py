"""What a training run is: the algorithm's constants, the optimiser's schedule and the data's shape, as one
typed config that goes into every checkpoint (so a run is reproducible from its directory alone).

The four algorithms differ only in three numbers and one data filter (reference/pac.md):

    algo         α (BC share of the policy loss)   β (TD loss weight)   data
    pac          0.75                              38                   all episodes
    bc_q         1.0                               38                   all episodes (critic trained, unused)
    bc           1.0                               0                    all episodes
    filtered_bc  1.0                               0                    successful episodes only

Values the paper leaves open (η, N sampled actions, target period, learning rates, batch) are ours, set
here with the reason beside each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from policies.model.config import POSITION_INPUTS, Q_READOUTS


@dataclass(frozen=True)
class Algorithm:
    name: str
    alpha: float  # policy loss = α · BC + (1 − α) · (Q-weighted improvement)
    beta: float  # total loss = policy loss + β · distributional TD loss
    successes_only: bool = False

    @property
    def critic(self) -> bool:
        return self.beta > 0.0


ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("pac", alpha=0.75, beta=38.0),
        Algorithm("bc_q", alpha=1.0, beta=38.0),
        Algorithm("bc", alpha=1.0, beta=0.0),
        Algorithm("filtered_bc", alpha=1.0, beta=0.0, successes_only=True),
    )
}
BC_DATA = ("all", "successes", "advantage")  # what TrainConfig.bc_data may name
CRITIC_GRADIENTS = ("trunk", "head")  # what TrainConfig.critic_gradient may name, besides a share in (0, 1)


def critic_trunk_share(critic_gradient: str) -> float:
    """The share of the TD loss's gradient that reaches the shared encoder: "trunk" 1, "head" 0, or a number in
    (0, 1) between them (TrainConfig.critic_gradient). ValueError for anything else."""
    if critic_gradient in CRITIC_GRADIENTS:
        return 1.0 if critic_gradient == "trunk" else 0.0
    try:
        share = float(critic_gradient)
    except ValueError:
        share = float("nan")
    if not 0.0 < share < 1.0:
        raise ValueError(
            f"critic_gradient must be one of {CRITIC_GRADIENTS} or a share in (0, 1), got {critic_gradient!r}"
        )
    return share


OBSERVATIONS = ("state", "vision")  # state: proprio + object poses; vision: proprio + cameras


@dataclass(frozen=True)
class TrainConfig:
    dataset: str  # the dataset's directory (ROOT/<namespace>/<name>), as given to pac-train
    size: str = "XS"
    algo: str = "pac"
    observation: str = "state"
    steps: int = 10_000
    seed: int = 0
    # data (policies/data/transitions.py)
    batch_size: int = 256  # per process; the global batch is this × world size
    n_step: int = 5
    gamma: float = 0.99
    reward: str = "sparse"  # sparse, shaped or staged (policies/data/transitions.py); every return lies in [0, 1]
    holdout: float = 0.05  # fraction of episodes kept out of training for the held-out losses
    workers: int = 0  # DataLoader processes decoding frames (0: in the training process)
    # optimiser: AdamW, linear warm-up from lr_init to lr_peak, then cosine to lr_end at `steps`
    lr_init: float = 1e-5
    lr_peak: float = 3e-4
    lr_end: float = 1e-5
    warmup_steps: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # actor-critic (open in the paper: our choices)
    # η of softmax(Q/η) over the sampled actions. "per_state": η(s) = eta · std_i Q(s, a_i), so the improvement
    # reweights by the same amount whatever the spread of Q at a state (as MPO's KL bound does); "fixed": η = eta
    # on the critic's [0, 1] scale. Measured: with a fixed 0.05, Q's spread over the 16 samples was so small
    # that the weights stayed uniform (effective sample size 16.0 of 16) and PAC was BC plus self-distillation.
    eta_mode: str = "per_state"
    eta: float = 1.0
    # the improvement's score of a sampled action: the mean of the lowest fraction of its return distribution
    # (CVaR). 1: E[Z], the paper. Tried in issue 11 against a critic that overrates rare early closes, on the
    # reading that their outcomes are spread: `critic_probe --cvar 0.25` found the trained critic's tail ranking
    # them as its mean did (it is confidently wrong), so the study does not use it.
    improvement_cvar: float = 1.0
    improvement_samples: int = 16  # N actions sampled from the target policy per state for the improvement
    target_samples: int = 8  # actions sampled from the target policy at the next state for the TD target
    target_period: int = 100  # steps between copies of the online network into the target network
    # the critic values an action held for this many steps (its TD action: the mean of the data's next h actions;
    # policies/data/nstep.held_actions). 1: the paper's Q(s, a) of one step. Issue 11's probes: at 20 Hz one
    # step's arm velocity changes the return by less than a critic bin, so Q(s, ·) ≈ V(s) and the improvement
    # cannot tell directions apart; held over h steps the same velocity changes it h times more. It values only
    # what the data holds: benchmarks/critic_probe.py counts how often that is away from the goal.
    critic_horizon: int = 1
    # the gripper's own horizon in the critic's action (None: critic_horizon). 1 scores the gripper by the step's
    # own command while the arm's velocities are held: issue 11's probe found a critic of held grippers (h 20)
    # valuing closing five steps before the data's grasps (the window's mean is already "closed" there), and the
    # policy closed on air.
    critic_horizon_gripper: int | None = None
    # the gripper's horizon at steps whose previous gripper command was closed (None: critic_horizon_gripper
    # everywhere). With critic_horizon_gripper=1 and this 20: a grasp is scored by its own step, a release by the
    # 20 steps after it. Issue 11's probes: the one-step gripper fixed the early close at grasps but went blind
    # at releases (+0.001), where the held one saw opening on blue win by 0.04-0.17 (policies/data/nstep.py).
    critic_horizon_gripper_closed: int | None = None
    # the data the α·BC term clones: "all" (the paper), or "successes" (the transitions of successful episodes;
    # the critic and the improvement still see all of them): issue 11's probe found PAC's carry to be BC-on-all's;
    # or "advantage": the transitions whose n-step advantage under the target network is positive, the TD
    # target's mean (the data's next n rewards and the bootstrap) above V(s) (the mean E[Z] of the target policy's
    # sampled actions): CRR's binary filter (Wang et al. 2020) with the data's own n-step outcome in place of
    # Q(s, a_data), so it needs no critic that ranks actions, only one that values states. Task-free.
    bc_data: str = "all"
    # α of the policy loss: None keeps the algorithm's (0.75 for PAC, the paper's). alpha_gripper gives the gripper
    # dimension its own: issue 11's probe found the critic right about opening, but α = 0.75 of BC on all the data
    # holding P(open) under one half, so argmax never released.
    alpha: float | None = None
    alpha_gripper: float | None = None
    # where the TD loss's gradient goes: "trunk" (the paper: the critic head and the shared encoder, so β·TD shapes
    # the features the policy reads) or "head" (the critic head alone, on the encoder's features taken as given).
    # Issue 11's probe: with the critic on the shared trunk the actor's held-out BC loss rose 5.3 → 6.4 nats.
    # A number in (0, 1) between the two: that share of the TD gradient reaches the encoder (the critic head gets
    # all of it). Issue 11, session 39: the trunk critic ranked standing still below moving from 2k steps on, the
    # head one above on two seeds in three (which then hesitated); the head gave the actor better features.
    critic_gradient: str = "trunk"
    # a conservative critic (CQL, Kumar et al. 2020): adds conservative · (mean_i E[Z(s, a_i)] − E[Z(s, a_data)])
    # to the loss, a_i the first conservative_samples of the improvement's samples from the target policy.
    # 0: the paper's critic. Issue 11's probes: the critic rated closing 2-7 cm above red above staying open by
    # 0.05-0.10, where the data's own returns say closing there is worse by 0.1-0.24 (grasp_coverage.py);
    # 1.5 % of the data's steps there close, too few for the TD loss alone to pull the rare action's value down.
    conservative: float = 0.0
    conservative_samples: int = 4  # the first K of the N samples score the gap: its backward pass costs per sample
    # "all": the sampled actions differ from the data's in every dimension; "improved": only in those the
    # improvement trains (α_d < 1), the rest take the data's values. Issue 11's first run (all, weight 10,
    # α arm 1): the gap rated the policy's single-step arm velocities below the data's held ones, and through
    # the TD backups every value fell (Q 0.13 at the grasp against a data return of 0.71 by 4k steps).
    # "gripper": only the gripper differs, also where the improvement trains the arm (α_arm < 1): issue 11's arm
    # samples are single steps and its data actions held means, a gap the term would read as the arm's value.
    conservative_dims: str = "all"
    # prioritised sampling (policies/data/priority.py, Schaul et al. 2016): 0 draws every transition alike (the
    # paper); a > 0 draws transition i with probability ∝ (TD error_i + 1e-3)^a, its error the KL from the critic
    # to its target at its last visit, and weights the TD loss by importance weights (N·P(i))^−β, β annealed from
    # priority_correction to 1 at `steps`. Issue 11: the data's deciding states are 3 % of its steps.
    priority: float = 0.0
    priority_correction: float = 0.4
    # the critic head's input (PACConfig.q_readout): "readout" (the readout token, the default) or "all_tokens"
    q_readout: str = "readout"
    # where the model reads positions from (PACConfig.position_inputs): "absolute" (the default) or "relative"
    position_inputs: str = "absolute"
    # bookkeeping
    log_every: int = 50
    eval_every: int = 500  # held-out losses
    checkpoint_every: int = 1000
    amp: str = "auto"  # auto: bf16 autocast on a GPU, none on the CPU; or "none", "bf16", "fp16"

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {list(ALGORITHMS)}, got {self.algo!r}")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {self.observation!r}")
        if self.eta_mode not in ("per_state", "fixed"):
            raise ValueError(f"eta_mode must be per_state or fixed, got {self.eta_mode!r}")
        if self.bc_data not in BC_DATA:
            raise ValueError(f"bc_data must be one of {BC_DATA}, got {self.bc_data!r}")
        if self.bc_data == "advantage" and not ALGORITHMS[self.algo].critic:
            raise ValueError(f"bc_data='advantage' needs a critic; {self.algo} trains none (use pac or bc_q)")
        for name in ("alpha", "alpha_gripper"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
            if value is not None and value < 1.0 and not ALGORITHMS[self.algo].critic:
                # below 1 the policy loss weights sampled actions by a critic this algorithm never trains
                raise ValueError(f"{name} {value} < 1 needs a critic; {self.algo} trains none (use pac or bc_q)")
        if self.priority < 0.0 or not 0.0 <= self.priority_correction <= 1.0:
            raise ValueError(f"need priority ≥ 0 and priority_correction in [0, 1]: {self}")
        if self.priority > 0.0 and not ALGORITHMS[self.algo].critic:
            raise ValueError(f"priority needs a critic's TD errors: algo {self.algo!r} trains none")
        critic_trunk_share(self.critic_gradient)  # ValueError naming what it may be
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, none, bf16 or fp16, got {self.amp!r}")
        if self.steps < 1 or self.warmup_steps < 0 or not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"need steps ≥ 1, warmup_steps ≥ 0 and holdout in [0, 1): {self}")
        for name in ("critic_horizon", "critic_horizon_gripper", "critic_horizon_gripper_closed"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= self.n_step:
                raise ValueError(f"{name} must lie in 1..n_step, got {value} (n_step {self.n_step})")
        if self.q_readout not in Q_READOUTS:
            raise ValueError(f"q_readout must be one of {Q_READOUTS}, got {self.q_readout!r}")
        if self.position_inputs not in POSITION_INPUTS:
            raise ValueError(f"position_inputs must be one of {POSITION_INPUTS}, got {self.position_inputs!r}")
        if self.conservative_dims not in ("all", "improved", "gripper"):
            raise ValueError(f"conservative_dims must be all, improved or gripper, got {self.conservative_dims!r}")
        if self.conservative < 0.0 or not 1 <= self.conservative_samples <= self.improvement_samples:
            raise ValueError(
                f"conservative must be ≥ 0 and conservative_samples in [1, improvement_samples], got "
                f"{self.conservative} and {self.conservative_samples}"
            )
        if not 0.0 < self.improvement_cvar <= 1.0:
            raise ValueError(f"improvement_cvar must be in (0, 1], got {self.improvement_cvar}")
        if self.eta <= 0 or self.improvement_samples < 1 or self.target_samples < 1 or self.target_period < 1:
            raise ValueError("eta must be > 0 and the sample counts and target period ≥ 1")

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm's reference settings, with this config's α where it names one."""
        algo = ALGORITHMS[self.algo]
        return algo if self.alpha is None else replace(algo, alpha=self.alpha)

    def alpha_per_dim(self, dims: tuple[str, ...]) -> tuple[float, ...]:
        """One α per action dimension when the gripper has its own, else () (one α for all)."""
        if self.alpha_gripper is None or "gripper" not in dims:
            return ()
        return tuple(self.alpha_gripper if d == "gripper" else self.algorithm.alpha for d in dims)

    def critic_horizon_per_dim(self, dims: tuple[str, ...]) -> int | tuple[int, ...]:
        """The critic's hold per action dimension when the gripper has its own, else the one for all."""
        if self.critic_horizon_gripper is None or "gripper" not in dims:
            return self.critic_horizon
        return tuple(self.critic_horizon_gripper if d == "gripper" else self.critic_horizon for d in dims)

    def critic_horizon_closed(self, dims: tuple[str, ...]) -> tuple[int, int] | None:
        """(the gripper's dimension, its horizon where it was closed) when it has one, else None."""
        if self.critic_horizon_gripper_closed is None or "gripper" not in dims:
            return None
        return dims.index("gripper"), self.critic_horizon_gripper_closed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)
