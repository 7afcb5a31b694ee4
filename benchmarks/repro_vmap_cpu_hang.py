"""A self-contained candidate reproducer, jax and optax only, for the XLA:CPU hang that
seqlab met on vmapped seeds (jax 0.10.2, 2 cores): every thread idle, the main thread
waiting on a buffer that never became ready.

It mirrors what seqlab's training step does for ``train.num_seeds=2,
train.seed_batching=vmap`` on the adding problem (T = 100, H = 64, batch 64), without
seqlab: a GRU or LSTM unrolled with ``lax.scan``, a linear head, MSE, Adam, 100 steps per
jitted chunk inside a ``lax.scan``, the whole chunk ``vmap``-ped over two seeds. Run it
many times in fresh processes, each under a time limit (``benchmarks/vmap_seeds_cpu.py
--program minimal`` does); a run that never prints "done" is the hang.

    python benchmarks/repro_vmap_cpu_hang.py --cell gru --chunks 2

Measured on 2026-11-25 (benchmarks/results/vmap_seeds_cpu_2026-11-25/summary.md): on jax
0.10.2 it did not hang in 8 trials of 600 steps run alone, where seqlab's own step had just
hung in 5 of 6, so it does NOT reproduce the hang yet: whatever triggers it is in something
seqlab's step has and this lacks (the model's masking by sequence lengths, the task's
sampler, dropout keys, the gradient norm, ...). It is kept as the
starting point for that bisection.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

HIDDEN, STEPS, BATCH, SEEDS, CHUNK = 64, 100, 64, 2, 100


def init(key, cell):
    gates = {"gru": 3, "lstm": 4}[cell]
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w_ih": jax.random.normal(k1, (2, gates * HIDDEN)) / 2**0.5,
        "w_hh": jax.random.normal(k2, (HIDDEN, gates * HIDDEN)) / HIDDEN**0.5,
        "b": jnp.zeros((gates * HIDDEN,)),
        "w_out": jax.random.normal(k3, (HIDDEN, 1)) / HIDDEN**0.5,
    }


def step(cell, params, carry, x):
    if cell == "lstm":
        h, c = carry
        i, f, g, o = jnp.split(x @ params["w_ih"] + h @ params["w_hh"] + params["b"], 4, -1)
        c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    h = carry
    xr, xz, xn = jnp.split(x @ params["w_ih"] + params["b"], 3, -1)
    hr, hz, hn = jnp.split(h @ params["w_hh"], 3, -1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    h = (1 - z) * jnp.tanh(xn + r * hn) + z * h
    return h, h


def adding_batch(key):
    """The adding problem: values in [0, 1), two marked positions, target their sum."""
    k1, k2 = jax.random.split(key)
    values = jax.random.uniform(k1, (BATCH, STEPS))
    marks = jax.vmap(lambda k: jax.random.choice(k, STEPS, (2,), replace=False))(
        jax.random.split(k2, BATCH)
    )
    mask = jnp.zeros((BATCH, STEPS)).at[jnp.arange(BATCH)[:, None], marks].set(1.0)
    target = jnp.sum(values * mask, axis=1, keepdims=True)
    return jnp.stack([values, mask], axis=-1), target


def loss_fn(cell, params, xs, target):
    zeros = jnp.zeros((BATCH, HIDDEN))
    carry = (zeros, zeros) if cell == "lstm" else zeros
    _, hs = jax.lax.scan(lambda c, x: step(cell, params, c, x), carry, jnp.swapaxes(xs, 0, 1))
    return jnp.mean((hs[-1] @ params["w_out"] - target) ** 2)


def make_chunk(cell, optimizer):
    def one_seed(params, opt_state, key, first_step):
        def one_step(state, step_index):
            params, opt_state = state
            xs, target = adding_batch(jax.random.fold_in(key, step_index))
            loss, grads = jax.value_and_grad(lambda p: loss_fn(cell, p, xs, target))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        steps = first_step + jnp.arange(CHUNK)
        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), steps)
        return params, opt_state, jnp.mean(losses)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, None)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    parser.add_argument("--chunks", type=int, default=2)
    args = parser.parse_args()
    optimizer = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(0), SEEDS)
    params = jax.vmap(lambda k: init(k, args.cell))(keys)
    opt_state = jax.vmap(optimizer.init)(params)
    chunk = make_chunk(args.cell, optimizer)
    for index in range(args.chunks):
        start = time.perf_counter()
        params, opt_state, loss = chunk(params, opt_state, keys, jnp.int32(index * CHUNK))
        jax.block_until_ready(loss)
        print(f"chunk {index}: loss {loss} in {time.perf_counter() - start:.2f} s", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
