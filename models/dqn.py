"""Deep Q-learning next-product recommender: environment, replay, Double DQN training, NumPy forward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.data import COUNT_INDEX, RANGE_MAX, owned
from schemas.features import FEATURE_COUNT, PRODUCT_PREMIUM_INDEX

N_ACTIONS = 22
TOP_K = 3
N_SUBTYPES, N_MAINTYPES = 41, 10  # MOSTYPE (column 1) and MOSHOOFD (column 5) are categorical: one-hot
SUBTYPE_OFFSET, MAINTYPE_OFFSET = FEATURE_COUNT, FEATURE_COUNT + N_SUBTYPES
OWNED_OFFSET = MAINTYPE_OFFSET + N_MAINTYPES
RECOMMENDED_OFFSET = OWNED_OFFSET + N_ACTIONS
STATE_DIM = RECOMMENDED_OFFSET + N_ACTIONS
_PREMIUM = np.array([-1 if i is None else i for i in PRODUCT_PREMIUM_INDEX], dtype=np.int64)


@dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters of the agent (recorded in the manifest)."""

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    gamma: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 512
    rounds: int = 80
    episodes_per_round: int = 1024
    updates_per_round: int = 40
    buffer_size: int = 120_000
    target_sync_updates: int = 200
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_fraction: float = 0.6
    huber_delta: float = 1.0
    episodes: str = "all_pairs"  # "all_pairs": every (customer, owned product) pair, epoch by epoch; "random"
    lr_decay: bool = True  # cosine decay of the learning rate to 10 % over the run
    ensemble: int = 3  # independent agents (seeds seed, seed+1000, ...) whose Q-values are averaged

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def category_indices(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 0-based subtype (MOSTYPE) and main type (MOSHOOFD) one-hot position, clipped to range."""
    return np.clip(features[:, 0], 1, N_SUBTYPES) - 1, np.clip(features[:, 4], 1, N_MAINTYPES) - 1


def encode(features: np.ndarray, recommended: np.ndarray) -> np.ndarray:
    """State vector: 86 values / range max, one-hot subtype & main type, owned flags, recommended mask."""
    n = features.shape[0]
    state = np.zeros((n, STATE_DIM), dtype=np.float32)
    state[:, :FEATURE_COUNT] = features / RANGE_MAX
    rows = np.arange(n)
    subtype, maintype = category_indices(features)
    state[rows, SUBTYPE_OFFSET + subtype] = 1.0
    state[rows, MAINTYPE_OFFSET + maintype] = 1.0
    state[:, OWNED_OFFSET:RECOMMENDED_OFFSET] = owned(features)
    state[:, RECOMMENDED_OFFSET:] = recommended
    return state


def hide(features: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Copy of the rows with product `hidden[i]` removed (its premium band and count set to 0)."""
    out = features.copy()
    rows = np.arange(len(out))
    out[rows, COUNT_INDEX[hidden]] = 0
    has_premium = _PREMIUM[hidden] >= 0
    out[rows[has_premium], _PREMIUM[hidden][has_premium]] = 0
    return out


def sample_hidden(features: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each customer owning a product, one owned product chosen uniformly: (row indices, product)."""
    held = owned(features)
    rows = np.flatnonzero(held.any(axis=1))
    weights = held[rows] / held[rows].sum(axis=1, keepdims=True)
    choice = (weights.cumsum(axis=1) > rng.random((len(rows), 1))).argmax(axis=1)
    return rows, choice.astype(np.int64)


def all_pairs(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (customer, owned product) pair: (row indices, product). One episode per pair and epoch."""
    rows, products = np.nonzero(owned(features))
    return rows.astype(np.int64), products.astype(np.int64)


def invalid_mask(state: np.ndarray) -> np.ndarray:
    """Actions not allowed in a state: products owned (visible) or already recommended."""
    return np.asarray((state[:, OWNED_OFFSET:RECOMMENDED_OFFSET] + state[:, RECOMMENDED_OFFSET:]) > 0)


class ReplayBuffer:
    """Fixed-size circular experience-replay buffer of (s, a, r, s', done)."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rng, self.size, self.cursor = capacity, rng, 0, 0
        self.state = np.zeros((capacity, STATE_DIM), dtype=np.float32)
        self.next_state = np.zeros((capacity, STATE_DIM), dtype=np.float32)
        self.action = np.zeros(capacity, dtype=np.int32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)

    def add(self, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray, d: np.ndarray) -> None:
        """Append a batch of transitions, overwriting the oldest."""
        idx = (self.cursor + np.arange(len(a))) % self.capacity
        self.state[idx], self.action[idx], self.reward[idx] = s, a, r
        self.next_state[idx], self.done[idx] = s2, d
        self.cursor = int((self.cursor + len(a)) % self.capacity)
        self.size = min(self.capacity, self.size + len(a))

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        """Uniform minibatch."""
        idx = self.rng.integers(0, self.size, size=n)
        return self.state[idx], self.action[idx], self.reward[idx], self.next_state[idx], self.done[idx]


def build_network(hidden: tuple[int, ...], dropout: float = 0.0) -> Any:
    """Q-network: Dense ReLU layers (optional dropout while training), linear head of 22 Q-values."""
    import keras

    layers: list[Any] = [keras.Input(shape=(STATE_DIM,))]
    for width in hidden:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(N_ACTIONS, activation="linear"))
    return keras.Sequential(layers, name="q_network")


def dense_weights(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each Dense layer as float32 arrays, for the NumPy forward pass."""
    return [
        (np.asarray(k, np.float32), np.asarray(b, np.float32))
        for k, b in (layer.get_weights() for layer in model.layers if layer.get_weights())
    ]


def forward(weights: list[tuple[np.ndarray, np.ndarray]], state: np.ndarray) -> np.ndarray:
    """NumPy forward pass: ReLU hidden layers, linear output."""
    h = state
    for kernel, bias in weights[:-1]:
        h = np.maximum(h @ kernel + bias, 0.0)
    kernel, bias = weights[-1]
    return np.asarray(h @ kernel + bias)


def rollout(
    q_fn: Callable[[np.ndarray], np.ndarray], features: np.ndarray, k: int = TOP_K
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy episode of k masked recommendations: (n, k) product indices and their Q-values."""
    n = features.shape[0]
    recommended = np.zeros((n, N_ACTIONS), dtype=bool)
    actions = np.zeros((n, k), dtype=np.int64)
    values = np.zeros((n, k), dtype=np.float64)
    rows = np.arange(n)
    for step in range(k):
        state = encode(features, recommended)
        q = np.where(invalid_mask(state), -np.inf, q_fn(state))
        actions[:, step] = np.argmax(q, axis=1)
        values[:, step] = q[rows, actions[:, step]]
        recommended[rows, actions[:, step]] = True
    return actions, values


def recommend(
    q_fn: Callable[[np.ndarray], np.ndarray], features: np.ndarray, k: int = TOP_K
) -> tuple[np.ndarray, np.ndarray]:
    """The k products of the greedy masked roll-out, ordered by one score shared across products.

    The score of a product is its Q-value in the customer's initial state (nothing recommended yet). Step-wise
    Q-values of the roll-out are not comparable across steps: after a miss, Q estimates the hit probability
    *given* the earlier picks missed, so a later pick can score higher than an earlier one. Scoring every pick
    in the same state and sorting by it makes one monotone calibration map give probabilities that are
    non-increasing along the returned list (same 3 products as the roll-out, so HR@3 is unchanged).
    Returns (n, k) product indices and their scores, best first.
    """
    actions, _ = rollout(q_fn, features, k)
    rows = np.arange(features.shape[0])[:, None]
    q0 = np.asarray(q_fn(encode(features, np.zeros((features.shape[0], N_ACTIONS), dtype=bool))))
    scores = q0[rows, actions].astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    return actions[rows, order], scores[rows, order]


def merge_networks(models: list[Any], hidden: tuple[int, ...]) -> Any:
    """One Dense network whose Q-values are exactly the mean of the given networks' Q-values.

    Hidden layers are stacked side by side (first layer concatenated, deeper ones block-diagonal), the output
    layer averages; dropout is dropped (inactive at inference anyway). Serving code is unchanged.
    """
    parts = [dense_weights(m) for m in models]
    n = len(parts)
    merged = build_network(tuple(width * n for width in hidden), dropout=0.0)
    weights: list[np.ndarray] = []
    for layer in range(len(hidden) + 1):
        kernels = [p[layer][0] for p in parts]
        biases = [p[layer][1] for p in parts]
        if layer == 0:
            kernel = np.concatenate(kernels, axis=1)
        elif layer == len(hidden):
            kernel = np.concatenate(kernels, axis=0) / n
        else:
            shape = (sum(k.shape[0] for k in kernels), sum(k.shape[1] for k in kernels))
            kernel = np.zeros(shape, np.float32)
            r = c = 0
            for k in kernels:
                kernel[r : r + k.shape[0], c : c + k.shape[1]] = k
                r, c = r + k.shape[0], c + k.shape[1]
        bias = np.mean(biases, axis=0) if layer == len(hidden) else np.concatenate(biases)
        weights += [kernel.astype(np.float32), bias.astype(np.float32)]
    merged.set_weights(weights)
    return merged


def train_dqn(
    features: np.ndarray, seed: int, config: DQNConfig, progress: Callable[[int], None] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Train `config.ensemble` Double-DQN agents and merge them into one Q-network; returns (model, stats)."""
    n = max(1, config.ensemble)
    done = [0]

    def tick(_: int) -> None:  # report `config.rounds` ticks in total, whatever the ensemble size
        done[0] += 1
        if progress is not None and done[0] % n == 0:
            progress(1)

    agents, stats = [], []
    for i in range(n):
        model, agent_stats = _train_agent(features, seed + 1000 * i, config, tick)
        agents.append(model)
        stats.append(agent_stats)
    if n == 1:
        return agents[0], stats[0]
    return merge_networks(agents, config.hidden), {
        "agents": stats,
        "updates": sum(s["updates"] for s in stats),
        "train_hit_rate_last_rounds": float(np.mean([s["train_hit_rate_last_rounds"] for s in stats])),
        "buffer_size": stats[0]["buffer_size"],
    }


def _train_agent(
    features: np.ndarray, seed: int, config: DQNConfig, progress: Callable[[int], None] | None = None
) -> tuple[Any, dict[str, Any]]:
    """One Double DQN agent with target network, replay buffer and ε-greedy exploration: (model, stats)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    online, target = (
        build_network(config.hidden, config.dropout),
        build_network(config.hidden, config.dropout),
    )
    target.set_weights(online.get_weights())
    total_updates = max(1, config.rounds * config.updates_per_round)
    learning_rate: Any = config.learning_rate
    if config.lr_decay:
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, total_updates, alpha=0.1)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    huber = keras.losses.Huber(delta=config.huber_delta)
    gamma = tf.constant(config.gamma, tf.float32)

    @tf.function(reduce_retracing=True)
    def update(s: Any, a: Any, r: Any, s2: Any, d: Any) -> Any:
        invalid = (s2[:, OWNED_OFFSET:RECOMMENDED_OFFSET] + s2[:, RECOMMENDED_OFFSET:]) > 0
        q_next_online = tf.where(invalid, tf.fill(tf.shape(invalid), -1e9), online(s2, training=False))
        best = tf.argmax(q_next_online, axis=1, output_type=tf.int32)
        q_next = tf.gather(target(s2, training=False), best, axis=1, batch_dims=1)
        q_next = tf.where(tf.reduce_all(invalid, axis=1), 0.0, q_next)
        y = r + gamma * (1.0 - d) * q_next
        with tf.GradientTape() as tape:
            q = tf.gather(online(s, training=True), a, axis=1, batch_dims=1)
            loss = huber(tf.stop_gradient(y), q)
        grads = tape.gradient(loss, online.trainable_variables)
        optimizer.apply_gradients(zip(grads, online.trainable_variables, strict=True))
        return loss

    @tf.function(reduce_retracing=True)
    def q_values(s: Any) -> Any:
        return online(s, training=False)

    buffer = ReplayBuffer(config.buffer_size, rng)
    updates, losses, hits = 0, [], []
    decay_rounds = max(1, int(config.rounds * config.epsilon_decay_fraction))
    pair_rows, pair_hidden = all_pairs(features)
    order, cursor = rng.permutation(len(pair_rows)), 0
    for round_ in range(config.rounds):
        epsilon = config.epsilon_start + (config.epsilon_end - config.epsilon_start) * min(
            1.0, round_ / decay_rounds
        )
        if config.episodes == "all_pairs":  # walk through a shuffled list of all pairs, reshuffled per epoch
            if cursor + config.episodes_per_round > len(order):
                order, cursor = np.concatenate([order[cursor:], rng.permutation(len(pair_rows))]), 0
            pick = order[cursor : cursor + config.episodes_per_round]
            cursor += config.episodes_per_round
            rows, hidden = pair_rows, pair_hidden
        else:
            rows, hidden = sample_hidden(features, rng)
            pick = rng.integers(0, len(rows), size=config.episodes_per_round)
        visible = hide(features[rows[pick]], hidden[pick])
        target_product = hidden[pick]
        recommended = np.zeros((len(pick), N_ACTIONS), dtype=bool)
        alive = np.ones(len(pick), dtype=bool)
        hit = np.zeros(len(pick), dtype=bool)
        for step in range(TOP_K):
            idx = np.flatnonzero(alive)
            state = encode(visible[idx], recommended[idx])
            invalid = invalid_mask(state)
            greedy = np.argmax(np.where(invalid, -np.inf, q_values(tf.constant(state)).numpy()), axis=1)
            noise = rng.random((len(idx), N_ACTIONS)) + invalid * 2.0  # random valid action
            explore = rng.random(len(idx)) < epsilon
            action = np.where(explore, np.argmin(noise, axis=1), greedy)
            reward = (action == target_product[idx]).astype(np.float32)
            recommended[idx, action] = True
            done = ((reward > 0) | (step == TOP_K - 1)).astype(np.float32)
            buffer.add(state, action, reward, encode(visible[idx], recommended[idx]), done)
            hit[idx] |= reward > 0
            alive[idx] = done == 0
        hits.append(float(hit.mean()))
        if buffer.size >= config.batch_size:
            for _ in range(config.updates_per_round):
                batch = buffer.sample(config.batch_size)
                losses.append(float(update(*(tf.constant(b) for b in batch))))
                updates += 1
                if updates % config.target_sync_updates == 0:
                    target.set_weights(online.get_weights())
        if progress is not None:
            progress(1)
    stats = {
        "updates": updates,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "train_hit_rate_last_rounds": float(np.mean(hits[-10:])),
        "buffer_size": int(buffer.size),
    }
    return online, stats


def fit_calibrator(values: np.ndarray, hits: np.ndarray) -> dict[str, list[float]]:
    """Isotonic map initial-state Q-value → P(product is the hidden one), fit on validation recommendations.

    One non-decreasing map shared by all products and positions, stored as interpolation knots.
    """
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(values, hits)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def calibrate(calibrator: dict[str, list[float]], values: np.ndarray) -> np.ndarray:
    """Calibrated probability in [0, 1] for scores of `recommend` (non-decreasing in the score)."""
    return np.clip(np.interp(values, calibrator["x"], calibrator["y"]), 0.0, 1.0)
