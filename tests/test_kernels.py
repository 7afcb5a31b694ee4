"""The fused Pallas kernels against their plain references and against ``seqlab.scan``'s XLA path.

Every test runs twice: ``TestKernelsGPU`` on a GPU (skipped without one) and
``TestKernelsInterpret`` in Pallas interpret mode, so CPU-only CI covers every kernel.

Tolerances (relative: max |kernel - reference| / max |reference|, matmuls at "highest"
precision so TF32 is off):

    dtype     forward  gradients
    float32   1e-5     1e-4
    bfloat16  2e-2     2e-2

The references keep the state and the accumulation in float32 and round the matmul
operands to the weights' dtype, as the kernels do. In bfloat16 the kernels are also held
to 2e-2 of float32 math throughout (the same bfloat16 values, widened), except the ReLU
RNN: there a pre-activation that rounding moves across zero switches its derivative, and
the difference grows over the following steps (measured up to 0.4 on random inputs
against float32 math, while the kernel equals its rounded reference to 1e-2).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqlab
from seqlab import cells, kernels
from seqlab.kernels import _lowering, testing
from seqlab.kernels.testing import random_problem, recurrence
from seqlab.unroll import _scan
from tests.references import relative_error

TOLERANCE = {  # dtype: (forward, gradients)
    jnp.float32: (1e-5, 1e-4),
    jnp.bfloat16: (2e-2, 2e-2),
}
# Small tiles so that test sizes span several tiles and leave ragged padding.
SMALL = kernels.Tiles(block_batch=16, block_hidden=16, block_k=32)
HAS_GPU = jax.default_backend() == "gpu"


def assert_trees_close(got, want, tolerance: float) -> None:
    """Every leaf of ``got`` within ``tolerance`` (relative) of the same leaf of ``want``."""
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got) == len(want) > 0
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        error = relative_error(a, b)
        assert error <= tolerance, f"leaf {index}: relative error {error:.2e} > {tolerance}"


def iter_eqns(jaxpr):
    """Every equation of a jaxpr, those of nested jaxprs included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    yield from iter_eqns(inner)


def pallas_grids(jaxpr) -> list[tuple[int, ...]]:
    """The grid of every ``pallas_call`` in a jaxpr, nested jaxprs included."""
    return [
        tuple(eqn.params["grid_mapping"].grid)
        for eqn in iter_eqns(jaxpr)
        if eqn.primitive.name == "pallas_call"
    ]


class TestKernelsGPU:
    INTERPRET = False

    @pytest.fixture(autouse=True)
    def _device(self):
        if not self.INTERPRET and not HAS_GPU:
            pytest.skip("needs a GPU (TestKernelsInterpret runs the same tests on CPU)")
        with jax.default_matmul_precision("highest"):
            yield

    def options(self, **overrides):
        fields = {"tiles": SMALL, "interpret": self.INTERPRET, **overrides}
        return {"options": kernels.Pallas(**fields)}

    @pytest.mark.parametrize("kind", ["lstm", "gru", "gru_original", "tanh", "relu"])
    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
    def test_matches_reference(self, rng, kind, dtype):
        """Forward and all gradients, ragged batch (B=5 of a 16 tile) and hidden (H=40:
        three 16-wide tiles, padded to 64 for the 32-wide reduction chunks)."""
        kernel, reference, _ = recurrence(kind)
        arrays, lengths = random_problem(rng, kind, 7, 5, 40, dtype)
        forward_tol, gradient_tol = TOLERANCE[dtype]

        def run(function):
            return jax.vjp(lambda *a: function(*a, lengths), *arrays)

        outputs, kernel_vjp = run(lambda *a: kernel(*a, **self.options()))
        expected, reference_vjp = run(reference)
        for got, want in zip(
            jax.tree_util.tree_leaves(outputs), jax.tree_util.tree_leaves(expected), strict=True
        ):
            assert got.dtype == dtype
            assert relative_error(got, want) <= forward_tol
        cotangent = jax.tree_util.tree_map(
            lambda y: jnp.asarray(rng.normal(size=y.shape), jnp.float32).astype(y.dtype),
            expected,
        )
        names = ("projected", "w_hh", "h0", "c0")
        for name, got, want in zip(
            names, kernel_vjp(cotangent), reference_vjp(cotangent), strict=True
        ):
            if np.max(np.abs(np.asarray(want, np.float32))) == 0:
                continue  # c0 of a cell without one
            assert relative_error(got, want) <= gradient_tol, name
        if dtype == jnp.bfloat16 and kind != "relu":  # against float32 math throughout
            wide = [array.astype(jnp.float32) for array in arrays]
            exact, exact_vjp = jax.vjp(lambda *a: reference(*a, lengths), *wide)
            assert_trees_close(outputs, exact, forward_tol)
            wide_cotangent = jax.tree_util.tree_map(lambda c: c.astype(jnp.float32), cotangent)
            for name, got, want in zip(
                names, kernel_vjp(cotangent), exact_vjp(wide_cotangent), strict=True
            ):
                if np.max(np.abs(np.asarray(want, np.float32))) > 0:
                    assert relative_error(got, want) <= gradient_tol, name

    @pytest.mark.parametrize("kind", ["lstm", "gru_original", "tanh"])
    def test_every_output_element_is_written(self, rng, kind):
        """Outputs start as NaN (``Pallas(poison=True)``): any element a kernel leaves
        unwritten and later uses turns the results or the gradients into NaN."""
        kernel, _, _ = recurrence(kind)
        arrays, lengths = random_problem(rng, kind, 5, 3, 24, jnp.float32)
        poisoned = self.options(poison=True)
        outputs, vjp = jax.vjp(lambda *a: kernel(*a, lengths, **poisoned), *arrays)
        gradients = vjp(jax.tree_util.tree_map(jnp.ones_like, outputs))
        for leaf in jax.tree_util.tree_leaves((outputs, gradients)):
            assert bool(jnp.all(jnp.isfinite(leaf)))

    @pytest.mark.parametrize("kind", ["lstm", "gru"])
    def test_xla_backward_fallback_agrees(self, rng, kind):
        kernel, _, _ = recurrence(kind)
        arrays, lengths = random_problem(rng, kind, 6, 4, 24, jnp.float32)

        def gradients(backward):
            def loss(*a):
                leaves = jax.tree_util.tree_leaves(
                    kernel(*a, lengths, **self.options(backward=backward))
                )
                return sum(jnp.sum(jnp.sin(leaf)) for leaf in leaves)

            return jax.grad(loss, argnums=(0, 1, 2))(*arrays)

        for fused, autodiff in zip(gradients("pallas"), gradients("xla"), strict=True):
            assert relative_error(fused, autodiff) <= 1e-4

    # One case per cell (a hypothesis search drew the minimal shape first and covered only
    # three cells in six examples): odd sizes that are not tile multiples, T = 1 and B = 1
    # among them, both directions, ragged and full lengths.
    @pytest.mark.parametrize(
        "kind, num_steps, batch, hidden, reverse, ragged",
        [
            ("lstm", 7, 5, 19, True, True),
            ("gru", 9, 13, 33, False, True),
            ("gru_original", 3, 1, 6, True, False),
            ("tanh", 1, 18, 35, False, True),
            ("relu", 6, 9, 24, True, True),
        ],
    )
    def test_scan_matches_xla(self, kind, num_steps, batch, hidden, reverse, ragged):
        """``seqlab.scan(implementation=Pallas(...))`` equals the XLA path end to end
        (input projection, direction, lengths, outputs zero past each length, final
        carry, gradients of parameters and inputs), batch-major."""
        seed = num_steps * 1000 + hidden
        rng = np.random.default_rng(seed)
        cell = {
            "lstm": cells.LSTM(hidden),
            "gru": cells.GRU(hidden),
            "gru_original": cells.GRU(hidden, variant="original"),
            "tanh": cells.RNN(hidden),
            "relu": cells.RNN(hidden, activation="relu"),
        }[kind]
        params = cell.init(jax.random.key(seed), 3)
        xs = jnp.asarray(rng.normal(size=(batch, num_steps, 3)), jnp.float32)
        lengths = (
            jnp.asarray(rng.integers(0, num_steps + 1, size=batch), jnp.int32) if ragged else None
        )
        implementation = kernels.Pallas(tiles=SMALL, interpret=self.INTERPRET)

        def run(implementation):
            def loss(params, xs):
                outputs, carry = seqlab.scan(
                    cell,
                    params,
                    xs,
                    seq_lengths=lengths,
                    reverse=reverse,
                    implementation=implementation,
                )
                value = jnp.sum(outputs * jnp.cos(outputs)) + sum(
                    jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(carry)
                )
                return value, (outputs, carry)

            return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, xs)

        (_, fused), fused_grads = run(implementation)
        (_, plain), plain_grads = run("xla")
        assert_trees_close(fused, plain, 1e-5)
        if lengths is not None:  # outputs past a length are exactly zero, as in xla
            past = jnp.arange(num_steps)[None, :] >= lengths[:, None]
            assert not bool(jnp.any(jnp.where(past[..., None], fused[0], 0.0) != 0))
        assert_trees_close(fused_grads, plain_grads, 1e-4)

    @pytest.mark.parametrize(
        "max_programs", [2, 4, None], ids=["one-at-a-time", "groups-of-two", "all-at-once"]
    )
    def test_vmap_over_seeds_matches_each_seed_alone(self, rng, max_programs):
        """Nested ``jax.vmap`` of the gradients: over 3 seeds (each with its own weights and
        initial carry) inside, over 2 input batches sharing them outside. The results equal
        running every problem alone, and no grid holds more programs than the resident
        budget. B = 20 is two batch blocks, so in interpret mode one copy of the grid is 2
        programs: a budget of 2 runs the copies one at a time, 4 runs the seeds as a group
        of two plus a remainder of one, 32 (the CPU default) all side by side
        (``_launch.resident_vmap``)."""
        kernel, _, _ = recurrence("gru_original")  # two barriers per step each way
        tiles = dataclasses.replace(SMALL, max_programs=max_programs)
        seeds, batches = 3, 2
        problems = [
            random_problem(rng, "gru_original", 4, 20, 24, jnp.float32)[0] for _ in range(seeds)
        ]
        lengths = jnp.asarray(rng.integers(0, 5, size=20), jnp.int32)

        def loss(projected, w_hh, h0, c0):
            outputs = kernel(projected, w_hh, h0, c0, lengths, **self.options(tiles=tiles))
            (hs,) = jax.tree_util.tree_leaves(outputs)
            return jnp.sum(jnp.sin(hs) * hs)

        gradient = jax.grad(loss, argnums=(0, 1))
        projected = jnp.asarray(  # (batches, seeds, T, B, 3H)
            rng.normal(size=(batches, seeds) + problems[0][0].shape), jnp.float32
        )
        per_seed = [jnp.stack([p[k] for p in problems]) for k in (1, 2, 3)]  # (seeds, ...)
        batched = jax.vmap(jax.vmap(gradient), in_axes=(0, None, None, None))
        budget = max_programs or testing.device_programs()
        grids = pallas_grids(jax.make_jaxpr(batched)(projected, *per_seed).jaxpr)
        assert len(grids) >= 2 and max(int(np.prod(g)) for g in grids) <= budget
        got = jax.jit(batched)(projected, *per_seed)
        alone = jax.jit(gradient)
        for batch in range(batches):
            for seed in range(seeds):
                weights = [array[seed] for array in per_seed]
                for g, want in zip(got, alone(projected[batch, seed], *weights), strict=True):
                    assert relative_error(g[batch, seed], want) <= 1e-5

    @pytest.mark.parametrize("inner", [cells.LSTM(20), cells.GRU(20)], ids=["lstm", "gru"])
    def test_trainable_initial_state(self, rng, inner):
        """A learned initial state (random, not the zeros it starts at) reaches the kernels
        as the carry, and its gradient comes back through them, reversed and ragged."""
        cell = cells.TrainableInitialState(inner)
        params = cell.init(jax.random.key(3), 5)
        params["initial_state"] = jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), jnp.float32),
            params["initial_state"],
        )
        xs = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
        lengths = jnp.asarray([6, 2, 4], jnp.int32)

        def run(implementation):
            def loss(params, xs):
                outputs, carry = seqlab.scan(
                    cell, params, xs, seq_lengths=lengths, reverse=True,
                    implementation=implementation,
                )  # fmt: skip
                return jnp.sum(jnp.sin(outputs)) + sum(
                    jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(carry)
                )

            return jax.value_and_grad(loss, argnums=(0, 1))(params, xs)

        (fused, fused_grads) = run(kernels.Pallas(tiles=SMALL, interpret=self.INTERPRET))
        (plain, plain_grads) = run("xla")
        assert relative_error(fused, plain) <= 1e-5
        learned = jax.tree_util.tree_leaves(plain_grads[0]["initial_state"])
        assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in learned)  # it does matter
        assert_trees_close(fused_grads, plain_grads, 1e-4)

    def test_stacked_bidirectional_layer(self, rng):
        """Two bidirectional LSTM layers over ragged lengths: pallas equals xla."""
        layer = seqlab.layers.RNNLayer(cells.LSTM(20), num_layers=2, bidirectional=True)
        params = layer.init(jax.random.key(1), 6)
        xs = jnp.asarray(rng.normal(size=(4, 8, 6)), jnp.float32)
        lengths = jnp.asarray([8, 3, 5, 1], jnp.int32)
        pallas = dataclasses.replace(
            layer, implementation=kernels.Pallas(tiles=SMALL, interpret=self.INTERPRET)
        )

        def loss(layer):
            def value(params, xs):
                outputs, _ = layer.apply(params, xs, seq_lengths=lengths)
                return jnp.sum(jnp.tanh(outputs) * outputs)

            return jax.value_and_grad(value, argnums=(0, 1))(params, xs)

        (fused, fused_grads), (plain, plain_grads) = loss(pallas), loss(layer)
        assert relative_error(fused, plain) <= 1e-5
        assert_trees_close(fused_grads, plain_grads, 1e-4)

    def test_jit_and_one_tile_programs(self, rng):
        """Under jit, with H equal to one tile (each program owns exactly one tile)."""
        cell = cells.GRU(16)
        params = cell.init(jax.random.key(2), 4)
        xs = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
        implementation = kernels.Pallas(
            tiles=kernels.Tiles(block_hidden=16, block_k=16), interpret=self.INTERPRET
        )
        fused = jax.jit(lambda p, x: seqlab.scan(cell, p, x, implementation=implementation))
        got, want = fused(params, xs), seqlab.scan(cell, params, xs, implementation="xla")
        assert_trees_close(got, want, 1e-5)


class TestKernelsInterpret(TestKernelsGPU):
    INTERPRET = True


class TestChoosing:
    """The dispatcher: explicit requests, the automatic rule, and the grid layout."""

    @pytest.mark.parametrize(
        ("cell", "kwargs", "reason"),
        [
            (cells.MGU(8), {}, "cover seqlab.cells.RNN, LSTM and GRU"),
            (cells.LSTM(8, proj_size=4), {}, "proj_size"),
            (cells.LSTM(8), {"remat": True}, "remat"),
            (cells.LSTM(8), {"hoist_input_projection": False}, "always hoist"),
        ],
    )
    def test_unsupported_requests_raise(self, cell, kwargs, reason):
        params = cell.init(jax.random.key(0), 3)
        xs = jnp.ones((2, 4, 3), jnp.float32)
        with pytest.raises(ValueError, match=reason):
            seqlab.scan(cell, params, xs, implementation="pallas", **kwargs)

    def test_unsupported_dtype_raises(self):
        cell = cells.GRU(8)
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp.float16), cell.init(jax.random.key(0), 3)
        )
        xs = jnp.ones((2, 4, 3), jnp.float16)
        with pytest.raises(ValueError, match="float32 or bfloat16; xs are float16"):
            seqlab.scan(cell, params, xs, implementation="pallas")

    def test_bad_settings_raise(self):
        with pytest.raises(ValueError, match="power of two >= 16"):
            kernels.Tiles(block_hidden=24)
        with pytest.raises(ValueError, match="backward must be one of"):
            kernels.Pallas(backward="cudnn")
        with pytest.raises(ValueError, match="Pallas.poison must be True or False"):
            kernels.Pallas(poison="yes")
        arrays = [jnp.ones((2, 1, 16)), jnp.ones((16, 16)), jnp.ones((1, 16))]
        with pytest.raises(ValueError, match="options must be a seqlab.kernels.Pallas"):
            kernels.rnn_recurrence(*arrays, jnp.ones((1,), jnp.int32), options={"tiles": None})

    def test_poison_is_part_of_the_jit_key(self, rng):
        """One jitted function, called with and without poison: the poisoned call traces
        anew and feeds the kernel one NaN-filled buffer per output (the old global flag,
        read at trace time, was ignored by a function jitted before it was set)."""
        arrays, lengths = random_problem(rng, "tanh", 4, 3, 16, jnp.float32)
        traces = []

        @functools.partial(jax.jit, static_argnames="options")
        def forward(projected, w_hh, h0, options):
            traces.append(options)
            return kernels.rnn_recurrence(projected, w_hh, h0, lengths, options=options)

        def kernel_inputs(options):
            jaxpr = jax.make_jaxpr(lambda *a: forward(*a, options=options))(*arrays[:3])
            (call,) = [e for e in iter_eqns(jaxpr.jaxpr) if e.primitive.name == "pallas_call"]
            return len(call.invars)

        plain = kernels.Pallas(interpret=True)
        poisoned = kernels.Pallas(interpret=True, poison=True)
        np.testing.assert_array_equal(
            forward(*arrays[:3], options=plain), forward(*arrays[:3], options=poisoned)
        )
        assert traces == [plain, poisoned]
        assert kernel_inputs(poisoned) == kernel_inputs(plain) + 1  # one output: hs
        with pytest.raises(ValueError, match="implementation must be one of"):
            _scan.resolve_implementation("triton")

    def test_automatic_rule(self, monkeypatch):
        lstm, mgu = cells.LSTM(8), cells.MGU(8)
        xs = jnp.ones((4, 2, 3), jnp.float32)

        def choose(cell, **kwargs):
            params = cell.init(jax.random.key(0), 3)
            carry = cell.initial_carry(params, (2,))
            return _scan.resolve_implementation(None, cell, params, xs, carry, **kwargs)[0]

        assert choose(lstm) == "xla"  # AUTO_PALLAS is empty until a GPU has measured them
        monkeypatch.setattr(_scan, "AUTO_PALLAS", (jax.default_backend(),))
        assert choose(lstm) == "pallas"
        assert choose(mgu) == "xla"
        assert choose(lstm, remat=True) == "xla"
        assert choose(lstm, hoist=False) == "xla"

    def test_gpu_layout_splits_hidden_within_the_resident_limit(self):
        """(B, H) = (64, 1024) on a 132-SM device: one 64-row batch block (the default
        block_batch) x 32 programs; with 16-row blocks, 4 x 32 = 128 programs."""
        layout = testing.make_layout(
            512, 64, 1024, kernels.Tiles(max_programs=132), interpret=False
        )
        assert layout.tiles.block_batch == 64 and layout.grid == (1, 32)
        assert layout.tiles_per_program == 1
        tiles = kernels.Tiles(block_batch=16, max_programs=132)
        layout = testing.make_layout(512, 64, 1024, tiles, interpret=False)
        assert layout.grid == (4, 32)
        assert testing.resident_programs_ok(layout)
        assert testing.make_layout(9, 5, 8, kernels.Tiles(), False).tiles.block_batch == 16
        small = testing.make_layout(512, 16, 1000, kernels.Tiles(max_programs=20), False)
        assert small.hidden_padded == 1024 and small.batch_blocks == 1
        assert small.hidden_programs == 16 and small.tiles_per_program == 2
        interpreted = testing.make_layout(512, 64, 1024, tiles, interpret=True)
        assert interpreted.grid == (4, 1)


def triton_calls(lowered_text: str) -> int:
    """Pallas Triton kernels in lowered StableHLO: custom calls that hand XLA the Triton IR
    (jax 0.10, 0.11 and 0.12 all lower them so)."""
    return lowered_text.count("stablehlo.custom_call @__gpu$xla.gpu.triton(")


class TestLowering:
    """Without a GPU, the kernels still go through the real Triton lowering: lowering for
    the "cuda" platform on a CPU machine builds the Triton IR of every kernel (forward and
    backward, with the multi-program barrier and without). It catches operations Triton
    cannot lower; it does not compile to PTX or run anything. ``kernels.lower_for_gpu``
    names the target device where jax asks for one (0.11 on) and not where it cannot
    (0.10, which assumes sm_90), so these run on every supported jax."""

    @pytest.mark.parametrize("kind", ["lstm", "gru", "gru_original", "tanh", "relu"])
    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
    @pytest.mark.parametrize("programs", [1, 4], ids=["one-program", "barrier"])
    def test_forward_and_backward_lower_for_cuda(self, kind, dtype, programs):
        kernel, _, gates = recurrence(kind)
        steps, batch, hidden = 8, 32, 128  # two batch blocks of 16; 4 column tiles of 32
        tiles = kernels.Tiles(block_batch=16, max_programs=2 * programs)
        lengths = jnp.full((batch,), steps, jnp.int32)
        arrays = (
            jnp.ones((steps, batch, gates * hidden), dtype),
            jnp.ones((hidden, gates * hidden), dtype),
            jnp.ones((batch, hidden), jnp.float32),
            jnp.ones((batch, hidden), jnp.float32),
        )
        layout = testing.make_layout(steps, batch, hidden, tiles, interpret=False)
        assert layout.hidden_programs == programs

        def loss(*a):
            leaves = jax.tree_util.tree_leaves(
                kernel(*a, lengths, options=kernels.Pallas(tiles=tiles, interpret=False))
            )
            return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves)

        gradient = jax.grad(loss, argnums=(0, 1, 2))
        lowered = kernels.lower_for_gpu(gradient, *arrays).as_text()
        assert triton_calls(lowered) == 2  # the forward and backward kernels
        assert "seqlab_" in lowered

    def test_vmapped_grids_stay_resident_on_the_gpu(self):
        """Five seeds vmapped on the GPU grid: each copy is 2 batch blocks x 4 programs,
        a budget of 16 holds two copies, so the kernels run as two groups of two side by
        side (a 3-axis grid) and a remainder of one, every grid within the budget, and the
        whole gradient lowers for CUDA. Pallas's own batching would make one (5, 2, 4)
        grid of 40 programs whose barriers could wait on programs that never start."""
        kernel, _, gates = recurrence("lstm")
        seeds, steps, batch, hidden = 5, 6, 32, 128
        tiles = kernels.Tiles(block_batch=16, max_programs=16)
        lengths = jnp.full((batch,), steps, jnp.int32)
        arrays = (
            jnp.ones((seeds, steps, batch, gates * hidden)),
            jnp.ones((seeds, hidden, gates * hidden)),
            jnp.ones((seeds, batch, hidden)),
            jnp.ones((seeds, batch, hidden)),
        )

        def loss(*a):
            hs, cs = kernel(*a, lengths, options=kernels.Pallas(tiles=tiles, interpret=False))
            return jnp.sum(hs) + jnp.sum(cs)

        gradient = jax.vmap(jax.grad(loss, argnums=(0, 1, 2)))
        grids = pallas_grids(jax.make_jaxpr(gradient)(*arrays).jaxpr)
        assert sorted(grids) == sorted([(2, 2, 4)] * 2 + [(2, 4)] * 2)  # fwd and bwd each
        lowered = kernels.lower_for_gpu(gradient, *arrays).as_text()
        assert triton_calls(lowered) == 4

    def test_the_target_device_is_named_where_jax_can_take_it(self, monkeypatch):
        """Without a GPU, jax 0.11 on lowers Pallas Triton calls only for a named abstract
        device; jax 0.10 cannot take one and assumes sm_90, so another target is refused
        there rather than silently lowered for the wrong card."""
        with pytest.raises(ValueError, match="NVIDIA device kind.*got 'H100'"):
            kernels.gpu_target("H100")
        monkeypatch.setattr(_lowering, "abstract_device_route", lambda: False)
        with pytest.raises(ValueError, match="for sm_90 only.*cannot target 'NVIDIA A100"):
            kernels.gpu_target("NVIDIA A100-SXM4-80GB")
        kernels.gpu_target("NVIDIA H200")  # sm_90 too: accepted on every jax
