"""A function that returns a pytree of arrays (a model's parameter init), run as one small program
per leaf, the programs shared between leaves of the same structure (issue 31).

One jit over a whole parameter tree is one large program (every leaf's key derivation and random
draw, thousands of leaves at full size): XLA:GPU spent over 90 s compiling the full-size state
init. Here the function is traced once, flat (`jax.disable_jit`: nested jits inlined), the
forward pass a Flax init also traces is dropped, and each output leaf gets the sub-program that
computes it alone. Scalar integer literals (Flax folds each module name's hash into the key with
`fold_in`) become the sub-program's inputs, so leaves whose programs differ only in them (the
same initializer and shape at another path) share one compiled program; float literals stay
constants. A program is compiled per distinct (structure, output sharding): the LRM `large`'s 603
leaves need a few dozen (bench/bench_state_init.py counts them). The ops are the same as in the
one-program jit, so on one backend the values match it bit for bit (tests/test_state_init.py).
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable

import jax
import numpy as np
from jax._src import core
from jax._src.interpreters import partial_eval as pe


# The jitted programs by (printed sub-program, output sharding), shared by every `Leafwise` of the
# process: the printed program is its whole definition (shapes, dtypes, float constants, nested
# bodies), so a second state of the same model (a test's resume, a rerun) compiles nothing.
_PROGRAMS: dict = {}


class Leafwise:
  """`Leafwise(fn, *example_args)`; `self(*args, out_shardings=None)` → `fn(*args)`'s pytree.

  `out_shardings`: None (default placement) or a pytree prefix-free list/tree of shardings
  matching the output's leaves. `programs`: the distinct sub-programs (closed jaxprs) and the
  leaves each computes."""

  def __init__(self, fn: Callable, *example_args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example_args)
    self.out_tree = jax.tree.structure(out_shape)
    self.n_args = len(jax.tree.leaves(example_args))
    # Drop what no output needs (a Flax init's forward pass; inside nested jits and remat too),
    # then re-trace with every nested call inlined: one flat program.
    jaxpr = pe.convert_constvars_jaxpr(closed.jaxpr)   # invars = consts + args
    jaxpr, used = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars), instantiate=True)
    flat_args = list(closed.consts) + jax.tree.leaves(example_args)
    kept = [x for x, u in zip(flat_args, used) if u]
    self._used, self._first_consts = used, list(closed.consts)
    closed = jax.make_jaxpr(lambda *a: _inline_eval(jaxpr, a))(*kept)
    jaxpr = pe.convert_constvars_jaxpr(closed.jaxpr)
    self.consts = list(closed.consts)
    n_out = len(jaxpr.outvars)
    # Backward pass: for every equation the set (a bit mask) of outputs that need it.
    mask: dict = {}
    for i, v in enumerate(jaxpr.outvars):
      if isinstance(v, core.Var):
        mask[v] = mask.get(v, 0) | (1 << i)
    per_leaf: list[list] = [[] for _ in range(n_out)]
    for eqn in reversed(jaxpr.eqns):
      m = 0
      for o in eqn.outvars:
        m |= mask.get(o, 0) if isinstance(o, core.Var) else 0
      if not m:
        continue
      for v in eqn.invars:
        if isinstance(v, core.Var):
          mask[v] = mask.get(v, 0) | m
      while m:
        low = m & -m
        per_leaf[low.bit_length() - 1].append(eqn)
        m ^= low
    in_pos = {v: k for k, v in enumerate(jaxpr.invars)}
    self.leaves: list[tuple[str, list[int], list[np.ndarray]]] = []
    self.programs: dict[str, core.ClosedJaxpr] = {}
    for i, out in enumerate(jaxpr.outvars):
      eqns = per_leaf[i][::-1]
      used = {v for e in eqns for v in e.invars if isinstance(v, core.Var) and v in in_pos}
      if isinstance(out, core.Var) and out in in_pos:
        used.add(out)
      invars = sorted(used, key=in_pos.__getitem__)
      hoisted_vars, hoisted_vals, new_eqns = [], [], []
      for e in eqns:
        ins, changed = [], False
        for v in e.invars:
          if (isinstance(v, core.Literal) and np.ndim(v.val) == 0
              and np.issubdtype(np.asarray(v.val).dtype, np.integer)):
            nv = core.Var(v.aval)
            hoisted_vars.append(nv)
            hoisted_vals.append(np.asarray(v.val, dtype=v.aval.dtype))
            ins.append(nv)
            changed = True
          else:
            ins.append(v)
        new_eqns.append(e.replace(invars=ins) if changed else e)
      sub = core.Jaxpr([], invars + hoisted_vars, [out], new_eqns,
                       core.join_effects(*(e.effects for e in new_eqns)) if new_eqns
                       else core.no_effects)
      key = str(sub)
      self.programs.setdefault(key, core.ClosedJaxpr(sub, []))
      self.leaves.append((key, [in_pos[v] for v in invars], hoisted_vals))

  def _program(self, key: str, sharding):
    jitted = _PROGRAMS.get((key, sharding))
    if jitted is None:
      fun = core.jaxpr_as_fun(self.programs[key])
      jitted = jax.jit(lambda *a: fun(*a)[0], out_shardings=sharding)
      _PROGRAMS[(key, sharding)] = jitted
    return jitted

  def calls(self, *args, out_shardings=None):
    """[(jitted program, its arguments)] per output leaf (`args`: arrays, placed or on the host,
    or `jax.ShapeDtypeStruct`s to lower the programs on)."""
    flat = jax.tree.leaves(args)
    if len(flat) != self.n_args:
      raise ValueError(f"Leafwise: {len(flat)} argument leaves, traced with {self.n_args}")
    flat = [x if isinstance(x, (jax.ShapeDtypeStruct, jax.Array)) else np.asarray(x)
            for x in flat]
    values = self.consts + [x for x, u in zip(self._first_consts + flat, self._used) if u]
    shardings = ([None] * len(self.leaves) if out_shardings is None
                 else jax.tree.leaves(out_shardings))
    if len(shardings) != len(self.leaves):
      raise ValueError(f"Leafwise: {len(shardings)} shardings for {len(self.leaves)} outputs")
    return [(self._program(key, sh), [values[p] for p in pos] + hoisted)
            for (key, pos, hoisted), sh in zip(self.leaves, shardings)]

  def __call__(self, *args, out_shardings=None, workers: int | None = None) -> Any:
    """`fn(*args)`. The first call of each distinct program is dispatched from `workers` threads
    (default: the CPU count, at most 8; one when several processes run, so every process issues
    its programs in the same order), so their compiles overlap; the other leaves follow."""
    calls = self.calls(*args, out_shardings=out_shardings)
    if workers is None:
      workers = 1 if jax.process_count() > 1 else min(8, os.cpu_count() or 1)
    outs: list = [None] * len(calls)
    first: dict = {}
    for i, (prog, _) in enumerate(calls):
      first.setdefault(id(prog), i)
    if workers > 1 and len(first) > 1:
      run = lambda i: calls[i][0](*calls[i][1])  # noqa: E731
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i, out in zip(first.values(), pool.map(run, list(first.values()))):
          outs[i] = out
    for i, (prog, a) in enumerate(calls):
      if outs[i] is None:
        outs[i] = prog(*a)
    return jax.tree.unflatten(self.out_tree, outs)


def _inner(eqn) -> tuple[Any, list] | None:
  """(jaxpr, consts) of a call-like equation whose body can be evaluated in place (nested jit,
  remat, custom derivative rules: a forward evaluation needs only the primal body)."""
  for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    j = eqn.params.get(name)
    if isinstance(j, core.ClosedJaxpr):
      return j.jaxpr, list(j.consts)
    if isinstance(j, core.Jaxpr):
      return j, []
  return None


def _inline_eval(jaxpr, args) -> list:
  """Evaluates `jaxpr` (no constvars) on `args` under the current trace, nested calls inlined."""
  env = dict(zip(jaxpr.invars, args))
  read = lambda v: v.val if isinstance(v, core.Literal) else env[v]  # noqa: E731
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    inner = _inner(eqn) if eqn.primitive.name in _INLINE else None
    if inner is not None:
      body, consts = inner
      body = pe.convert_constvars_jaxpr(body) if body.constvars else body
      outs = _inline_eval(body, consts + ins)
    else:
      outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    for v, x in zip(eqn.outvars, outs):
      if not isinstance(v, core.DropVar):
        env[v] = x
  return [read(v) for v in jaxpr.outvars]


_INLINE = {"pjit", "jit", "closed_call", "core_call", "checkpoint", "remat", "remat2",
           "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
