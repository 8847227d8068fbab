"""`%%task` cells and the `%nbflow` line magic.

A `%%task` cell registers its body as a task (see `nbflow.jupyter.cells` for
what counts as its inputs and outputs), runs it with whatever upstream task
cells are stale, binds its outputs into the notebook namespace and prints one
status line. Re-executing an unchanged cell loads its outputs from the cache
without executing the body. A cell ending with an expression returns its
value, so IPython displays it after the status line as it would for a plain
cell (from the cache: its stored display; see `cells.with_display`).

Cells are linked again before every run: a cell that read a name no task
cell defined yet (so it looked like a run parameter) picks up the cell that
defines it once that cell has been executed.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from nbflow.core.capture import ReplayListener
from nbflow.core.errors import DuplicateOutputError, MissingParameterError
from nbflow.core.pipeline.default import default_pipeline
from nbflow.core.pipeline.pipeline import Pipeline
from nbflow.core.result import RunResult
from nbflow.core.run.runner import raise_for_failures
from nbflow.jupyter.cells import (
    _BUILTINS,
    CellError,
    analyze,
    make_cell_function,
    shown_value,
    unpack_outputs,
)

_NAMED: dict[str, Pipeline] = {}
_MISSING = object()


@dataclass
class CellTask:
    """One `%%task` cell as registered: its source, analysis and options."""

    name: str
    pipeline: Pipeline
    source: str
    outputs: tuple[str, ...]
    reads: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    cell_id: str | None = None
    signature: tuple[Any, ...] | None = None
    """What the current task function was generated from (rebuilt when it changes)."""


def _fmt_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def _parse_value(text: str) -> Any:
    """`-p n=3` gives an int, `-p d=2024-01-01` a string: Python literals, else text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ignored_names(text: str) -> tuple[str, ...]:
    """`--ignore log_level,verbose` as names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"takes names separated by commas (--ignore log_level,verbose), not {text!r}"
        )
    return names


def _task_name(text: str) -> str:
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"the task name {text!r} must be a Python identifier")
    return text


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, not {text!r}") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, not {text!r}") from None


def _parse_magic_args(magic: Any, usage: str, line: str) -> argparse.Namespace:
    """`line` parsed by the magic's generated parser (its help is `%%task?`), with argparse's
    wording turned into one line that names the magic and the option."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        text = str(exc)
        if m := re.match(r"argument (\S+): expected one argument", text):
            text = f"{m[1].split('/')[-1]} needs a value"
        elif m := re.match(r"argument (\S+): (.*)", text):
            text = m[2] if m[1] == "name" else f"{m[1].split('/')[-1]} {m[2]}"
        elif text.startswith("unrecognized arguments:"):
            text = f"{text}; see {usage}? for the options"
        raise UsageError(f"{usage}: {text}") from None
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"{usage}: {exc}") from None


@magics_class
class NbflowMagics(Magics):
    """The magics; one instance per shell holds the task cells and run parameters."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.cells: dict[tuple[int, str], CellTask] = {}
        self.params: dict[str, Any] = {}
        self.current_cell_id: str | None = None
        self._bound: dict[tuple[int, str], tuple[Any, dict[str, Any]]] = {}
        """(pipeline, task) -> (digest of the value bound, the objects bound)."""

    @property
    def _ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        assert self.shell is not None, "the magics are registered with a shell"
        return self.shell.user_ns

    # --- pipelines -------------------------------------------------------------

    def _pipeline(self, name: str | None) -> Pipeline:
        if not name:
            return default_pipeline()
        found = self._ns.get(name)
        if isinstance(found, Pipeline):
            return found
        if name not in _NAMED:
            _NAMED[name] = Pipeline(name)
        return _NAMED[name]

    def _cells_of(self, pipe: Pipeline) -> dict[str, CellTask]:
        return {c.name: c for (pid, _), c in self.cells.items() if pid == id(pipe)}

    # --- linking ---------------------------------------------------------------

    def _producers(self, pipe: Pipeline) -> dict[str, str]:
        out: dict[str, str] = {}
        for cell in self._cells_of(pipe).values():
            for name in cell.outputs:
                out.setdefault(name, cell.name)
        return out

    def _check_unique(self, pipe: Pipeline, new: CellTask) -> None:
        for other in self._cells_of(pipe).values():
            if other.name == new.name:
                continue
            both = [n for n in new.outputs if n in other.outputs]
            if both:
                raise DuplicateOutputError(both[0], [other.name, new.name])

    def _link(self, pipe: Pipeline) -> None:
        """(Re)build the task function of every cell whose inputs or parameters changed."""
        producers = self._producers(pipe)
        ns = self._ns
        for cell in self._cells_of(pipe).values():
            inputs = {
                n: producers[n]
                for n in cell.reads
                if n in producers and producers[n] != cell.name and n not in cell.outputs
            }
            params = tuple(
                n
                for n in cell.reads
                if n not in inputs and n not in ns and n not in _BUILTINS and n not in cell.outputs
            )
            signature = (cell.source, tuple(sorted(inputs.items())), params, repr(cell.options))
            if signature == cell.signature and cell.name in pipe.tasks:
                continue
            fn = make_cell_function(cell.name, cell.source, cell.outputs, inputs, params, ns)
            upstream = sorted(set(inputs.values()))
            bindings = {f"__in_{i}": t for i, t in enumerate(upstream)}
            options = dict(cell.options)
            if "ignore" in options:
                options["ignore"] = self._ignored_params(cell, producers)
            task = pipe.task(fn, name=cell.name, inputs=bindings, **options)
            task.cell = cell  # type: ignore[attr-defined]
            cell.signature = signature

    def bind_run(self, pipe: Pipeline, result: RunResult) -> None:
        """Bind the task cells' values of a run started elsewhere (the widget's buttons)."""
        self._bind(pipe, result, list(result.states))

    def _ignored_params(
        self, cell: CellTask, producers: dict[str, str], *, check: bool = False
    ) -> tuple[str, ...]:
        """The cell function's parameters that `--ignore` names: a run parameter by its name,
        a name another task cell defines (or that cell's name) as that cell's whole input.

        The key sees an upstream cell's whole value, so its input is left out only when every
        name the cell reads from it is ignored. With `check`, anything that cannot be left out
        raises `CellError` (when the cell is registered); later, when other cells change what
        a name is, only what can be left out is (the rest counts, as it would without ignore).
        """
        ns = self._ns
        wanted = set(cell.options.get("ignore", ()))
        from_cell = {
            n: producers[n]
            for n in cell.reads
            if n in producers and producers[n] != cell.name and n not in cell.outputs
        }
        upstream = sorted(set(from_cell.values()))
        arg_for = {t: f"__in_{i}" for i, t in enumerate(upstream)}
        out: list[str] = []
        for name in sorted(wanted):
            if name in arg_for:  # an upstream cell named directly
                out.append(arg_for[name])
            elif name in from_cell:
                source = from_cell[name]
                others = sorted(n for n, t in from_cell.items() if t == source and n not in wanted)
                if not others:
                    out.append(arg_for[source])
                elif check:
                    raise CellError(
                        f"task cell `{cell.name}` ignores `{name}`, which comes from task cell "
                        f"`{source}` with {', '.join(f'`{n}`' for n in others)}; the key sees "
                        f"`{source}`'s whole value, so ignore all of them or name the cell: "
                        f"--ignore {source}"
                    )
            elif name not in cell.reads or name in cell.outputs or name in _BUILTINS:
                if check:
                    from nbflow.core.errors import did_you_mean

                    params = (n for n in cell.reads if n not in ns and n not in _BUILTINS)
                    choices = sorted({*from_cell, *upstream, *params} - set(cell.outputs))
                    raise CellError(
                        f"task cell `{cell.name}` ignores `{name}`, which it does not read"
                        f"{did_you_mean(name, choices)}; it can ignore: "
                        f"{', '.join(choices) or 'nothing (it reads no parameter or input)'}"
                    )
            elif name not in ns:
                out.append(name)  # a run parameter
            elif check:
                raise CellError(
                    f"task cell `{cell.name}` ignores `{name}`, a notebook variable: its value "
                    "counts as part of the cell's code; --ignore takes run parameters (`-p`) and "
                    "names that other task cells define"
                )
        return tuple(sorted(set(out)))

    def _bind(self, pipe: Pipeline, result: RunResult, names: list[str]) -> None:
        """Put task cells' outputs into the notebook. A cached value already bound (same
        digest, the very objects still in the namespace) is not loaded again."""
        cells, ns = self._cells_of(pipe), self._ns
        for name in names:
            if name not in cells or result.states.get(name) not in ("done", "cached"):
                continue
            digest = result.digests.get(name)
            bound = self._bound.get((id(pipe), name))
            if (
                bound is not None
                and bound[0] == digest
                and all(ns.get(k, _MISSING) is v for k, v in bound[1].items())
            ):
                continue
            outputs = unpack_outputs(result[name])
            ns.update(outputs)
            self._bound[(id(pipe), name)] = (digest, outputs)

    # --- %%task ----------------------------------------------------------------

    @cell_magic
    @magic_arguments(name="%task")  # IPython adds one %: the usage line says %%task
    @argument(
        "name",
        nargs="?",
        type=_task_name,
        help="the task's name (default: the first "
        "name the cell defines, or the name it had in this cell before)",
    )
    @argument("--retries", type=_count, metavar="N", help="attempts after the first on failure")
    @argument("--retry-delay", type=_seconds, metavar="S", help="seconds between attempts")
    @argument("--timeout", type=_seconds, metavar="S", help="fail an attempt after S seconds")
    @argument("--no-cache", action="store_true", help="always run; never store the value")
    @argument(
        "--no-replay",
        action="store_true",
        help="do not replay what a cached cell printed when it was computed",
    )
    @argument(
        "--ignore",
        type=_ignored_names,
        metavar="A,B",
        help="run parameters, inputs or upstream cells left out of the cache key",
    )
    @argument("--pipeline", metavar="P", help="the pipeline to register in (default: default)")
    def task(self, line: str, cell: str) -> Any:
        """Register this cell as a cached task, run it (and stale upstream cells), bind its outputs.

        A cell loaded from the cache replays, in grey, what it printed when its value was
        computed (from the run history); `--no-replay` turns that off for the cell.
        `--ignore log_level,verbose` names run parameters, inputs or upstream task cells the
        cell reads whose values do not count in its cache key (the `ignore=` task option).
        """
        args = _parse_magic_args(self.task, "%%task", line)
        options: dict[str, Any] = {}
        if args.no_cache:
            options["cache"] = False
        for option in ("retries", "timeout", "retry_delay", "ignore"):
            if getattr(args, option) is not None:
                options[option] = getattr(args, option)
        pipe = self._pipeline(args.pipeline)
        # --no-replay is a display choice, not a task option (it is not in the cache key)
        return self._register(pipe, cell, args.name, options, replay=not args.no_replay)

    def _register(
        self,
        pipe: Pipeline,
        source: str,
        name: str | None,
        options: dict[str, Any],
        *,
        replay: bool = False,
    ) -> Any:
        """Register and run the cell; return its trailing expression's value, which IPython
        then displays after the status line, as for a plain cell (None: nothing)."""
        started = time.perf_counter()
        analysis = analyze(source)
        cell_id = self.current_cell_id
        by_cell = next(
            (c for c in self._cells_of(pipe).values() if cell_id and c.cell_id == cell_id), None
        )
        if name is None:
            if by_cell is not None:
                name = by_cell.name
            elif analysis.outputs:
                name = analysis.outputs[0]
            else:
                raise CellError(
                    "this task cell defines no name at top level; give it a name: `%%task NAME`"
                )
        if by_cell is not None and by_cell.name != name:
            # The cell was renamed: the old task goes away.
            self.cells.pop((id(pipe), by_cell.name), None)
            if by_cell.name in pipe.tasks:
                pipe.remove(by_cell.name)
        new = CellTask(
            name=name,
            pipeline=pipe,
            source=source,
            outputs=analysis.outputs,
            reads=analysis.reads,
            options=options,
            cell_id=cell_id,
        )
        # An in-place update of another cell's output is the more specific mistake.
        producers = self._producers(pipe)
        for n in analysis.rebinds:
            if n in producers and producers[n] != name:
                raise CellError(
                    f"task cell `{name}` changes `{n}`, defined by task cell `{producers[n]}`; "
                    f"a task cell cannot update another cell's output in place: give the result "
                    f"a new name (e.g. `{n}_2 = ...`)"
                )
        self._check_unique(pipe, new)
        if "ignore" in options:  # before the cell is stored: a bad name must not stay behind
            self._ignored_params(new, producers, check=True)
        old = self.cells.get((id(pipe), name))
        if old is not None and old.source == source and old.options == options:
            new.signature = old.signature
        self.cells[(id(pipe), name)] = new
        self._link(pipe)
        # Only this cell's own output is replayed: an upstream cell loaded from the cache
        # shows its output under its own cell.
        result = self._checked_run(pipe, [name], force=False, replay=name if replay else None)
        self._bind(pipe, result, [*result.executed, name])
        elapsed = time.perf_counter() - started
        print(self._status_line(name, result, elapsed))
        raise_for_failures(result)
        return shown_value(name, result.metadata.get(name))

    def _checked_run(
        self, pipe: Pipeline, targets: list[str] | None, force: bool, replay: str | None = None
    ) -> RunResult:
        """Run; a name a task cell reads that nothing defines is explained in notebook terms.
        `replay`: a task whose output to replay, in grey, if it is loaded from the cache."""
        listeners = [ReplayListener([replay], grey=True)] if replay else []
        try:
            return pipe.run(
                targets,
                params=self.params,
                force=force,
                raise_on_failure=False,
                listeners=listeners,
            )
        except MissingParameterError as exc:
            if exc.task not in self._cells_of(pipe):
                raise
            raise CellError(
                f"task cell `{exc.task}` reads `{exc.param}`, which no task cell defines and no "
                f"plain cell assigns. Run the cell that defines `{exc.param}` first, or give it "
                f"as a run parameter: `%nbflow run -p {exc.param}=VALUE`."
            ) from None

    @staticmethod
    def _status_line(name: str, result: RunResult, elapsed: float) -> str:
        state = result.states.get(name)
        upstream = [t for t in result.executed if t != name]
        also = f"; upstream ran first: {', '.join(upstream)}" if upstream else ""
        if state == "cached":
            return f"[nbflow] {name}: loaded from cache in {_fmt_seconds(elapsed)}{also}"
        if state == "done":
            reason = result.reasons.get(name, "")
            why = " (first run)" if reason == "never run" else f" (stale because {reason})"
            return f"[nbflow] {name}: ran in {_fmt_seconds(result.durations.get(name, elapsed))}{why}{also}"
        reason = result.reasons.get(name, "")
        return f"[nbflow] {name}: {state}{': ' + reason if reason else ''}"

    # --- %nbflow -----------------------------------------------------------------

    @line_magic
    def nbflow(self, line: str) -> Any:
        """%nbflow run [TARGET ...] [-p NAME=VALUE ...] [--force] | status | dag |
        explain NAME | invalidate NAME | remove NAME | clear   (each takes --pipeline P)"""
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%nbflow: {exc}") from exc
        if args[:1] == ["ui"]:
            return _dashboard_link()
        pipeline_name = None
        if "--pipeline" in args:
            i = args.index("--pipeline")
            if i + 1 >= len(args):
                raise UsageError("%nbflow: --pipeline needs a value")
            pipeline_name = args[i + 1]
            del args[i : i + 2]
        pipe = self._pipeline(pipeline_name)
        if not args:
            raise UsageError(_USAGE)
        command, rest = args[0], args[1:]
        if command in ("explain", "invalidate", "remove") and len(rest) != 1:
            raise UsageError(f"%nbflow {command} takes one task name: %nbflow {command} NAME")
        if command == "run":
            return self._run(pipe, rest)
        self._link(pipe)
        if command == "status":
            return pipe.status(self.params or None)
        if command == "dag":
            return pipe.show()
        if command == "explain":
            print(f"{rest[0]}: {pipe.explain(rest[0], self.params or None)}")
            return None
        if command == "invalidate":
            marked = pipe.invalidate(rest[0])
            print(f"[nbflow] invalidated {', '.join(marked)}")
            return None
        if command == "remove":
            self.cells.pop((id(pipe), rest[0]), None)
            pipe.remove(rest[0])
            print(f"[nbflow] removed task `{rest[0]}`")
            return None
        if command == "clear":
            n = pipe.clear_cache()
            print(f"[nbflow] removed {n} cached result(s) of pipeline `{pipe.name}`")
            return None
        from nbflow.core.errors import did_you_mean

        raise UsageError(
            f"%nbflow: unknown command `{command}`{did_you_mean(command, _COMMANDS)}. {_USAGE}"
        )

    def _run(self, pipe: Pipeline, args: list[str]) -> None:
        targets: list[str] = []
        force = False
        it = iter(args)
        for arg in it:
            if arg in ("-p", "--param"):
                pair = next(it, None)
                if pair is None or "=" not in pair:
                    raise UsageError("%nbflow run: -p takes NAME=VALUE")
                key, _, value = pair.partition("=")
                self.params[key.strip()] = _parse_value(value)
            elif arg == "--force":
                force = True
            elif arg.startswith("-"):
                raise UsageError(f"%nbflow run: unknown option {arg}. {_USAGE}")
            else:
                targets.append(arg)
        self._link(pipe)
        started = time.perf_counter()
        result = pipe.run(targets or None, params=self.params, force=force, raise_on_failure=False)
        self._bind(pipe, result, list(result.states))
        ran = ", ".join(result.executed) or "nothing"
        print(
            f"[nbflow] ran {len(result.executed)} ({ran}), {len(result.cached)} from cache, "
            f"in {_fmt_seconds(time.perf_counter() - started)}"
        )
        raise_for_failures(result)


def _dashboard_link() -> Any:
    """`%nbflow ui`: the link to the dashboard of the Jupyter server this kernel runs
    under (at `/nbflow/`, behind its login), or how to start one."""
    from IPython.display import HTML

    from nbflow.jupyter.links import jupyter_dashboard_url

    url = jupyter_dashboard_url()
    if url is None:
        print("[nbflow] no Jupyter server found for this kernel; run `nbflow ui` in a terminal")
        return None
    print(f"[nbflow] dashboard: {url}")
    return HTML(f'<a href="{url}" target="_blank" rel="noopener">open the nbflow dashboard</a>')


_COMMANDS = ("run", "status", "dag", "explain", "invalidate", "remove", "clear", "ui")
_USAGE = (
    "usage: %nbflow run [TARGET ...] [-p NAME=VALUE ...] [--force] | status | dag | "
    "explain NAME | invalidate NAME | remove NAME | clear  [--pipeline P] | ui"
)

__all__ = ["CellTask", "NbflowMagics"]
