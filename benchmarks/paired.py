"""Paired, interleaved timing of training steps run in worker subprocesses.

Each contender (a model, a framework, a compile setting) lives in a subprocess of its
own, a *worker*: it builds its model, warms up (tracing, XLA compilation), reports what it
built, and waits. The parent then gives the workers turns: in every round each worker
runs `steps` training steps while the others wait idle, and the order of the turns is
reversed from one round to the next. A ratio between two contenders is taken per round,
from the medians of that round, so that both sides of a ratio saw the same machine state
within seconds of each other; the rounds' ratios give a median and a spread. This is
what keeps the ratio fair on a machine whose load changes (a training run on the same
cores), and a worker of its own lets each contender use another interpreter (larq's
tf.keras 2 beside Keras 3) or another process state.

Worker side (in the benchmark script, run with the worker's arguments):

    paired.serve({"params": model.count_params()}, lambda: model.train_on_batch(x, y))

Parent side:

    workers = paired.start({"a": ([python, script, "--worker", "a"], {}), ...})
    times = paired.interleave(workers, rounds=6, steps=3)
    paired.ratio(times["wall"], "a", "b")  # {"median": ..., "min": ..., "rounds": [...], ...}

Besides the wall-clock time of a step, a worker reports its process's CPU time during the
step: on shared cores the wall-clock time also counts the time other processes held the
cores, the CPU time mostly not.

The worker protocol is one JSON object per line on the worker's stdout, after a marker
(other output of the worker is passed on to the parent's stderr); the parent writes
`steps N` or `quit` to the worker's stdin. This module uses the standard library only, so
that any interpreter can import it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MARKER = "@@paired "
"""The prefix of a protocol line on a worker's stdout."""


def serve(info: dict, step: Callable[[], object]) -> None:
    """Run the worker side: report `info`, then time `step` whenever the parent asks.

    Call it after building and warming up the model; it returns when the parent sends
    `quit` or closes the worker's stdin.

    Args:
        info: What the worker built (JSON-serialisable), e.g. parameter counts.
        step: One training step; its return value is ignored.
    """
    _send({"ready": True, "info": info})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            return
        steps = int(command[1])
        wall, cpu = [], []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        _send({"wall": wall, "cpu": cpu})


def _send(message: dict) -> None:
    sys.stdout.write(MARKER + json.dumps(message) + "\n")
    sys.stdout.flush()


class Worker:
    """The parent's handle on one worker subprocess.

    Args:
        name: The contender's name in the results.
        argv: The worker's command line (interpreter first).
        env: Variables added to the parent's environment.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.info: dict = {}
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
            text=True,
        )

    def receive(self) -> dict:
        """The worker's next protocol message; other lines go to stderr.

        Raises:
            RuntimeError: If the worker exits before sending one.
        """
        for line in self.process.stdout:
            if line.startswith(MARKER):
                return json.loads(line[len(MARKER) :])
            sys.stderr.write(f"[{self.name}] {line}")
        code = self.process.wait()
        raise RuntimeError(f"Worker {self.name!r} exited with code {code}: {self.argv}")

    def wait_ready(self) -> dict:
        """Wait until the worker has built and warmed up; return its `info`."""
        self.info = self.receive()["info"]
        return self.info

    def run(self, steps: int) -> dict[str, list[float]]:
        """Time `steps` training steps in the worker.

        Returns:
            `{"wall": [...], "cpu": [...]}`: each step's wall-clock time and the CPU time
            of the worker process (all its threads) during it, in seconds.
        """
        self.process.stdin.write(f"steps {steps}\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        """Ask the worker to quit and wait for it."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            self.process.wait(timeout=120)


def start(commands: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, Worker]:
    """Start one worker per contender, all at once, and wait until all are ready.

    The workers warm up concurrently (that time is not measured).

    Args:
        commands: `{name: (argv, env)}`.

    Returns:
        `{name: Worker}`, in the order of `commands`, each with its `info`.
    """
    workers = {name: Worker(name, argv, env) for name, (argv, env) in commands.items()}
    try:
        for worker in workers.values():
            worker.wait_ready()
    except BaseException:
        close(workers)
        raise
    return workers


def close(workers: dict[str, Worker]) -> None:
    """Close every worker; a worker that does not quit in time is killed."""
    for worker in workers.values():
        try:
            worker.close()
        except (subprocess.TimeoutExpired, OSError):
            worker.process.kill()


def interleave(
    workers: dict[str, Worker], rounds: int, steps: int
) -> dict[str, dict[str, list[list[float]]]]:
    """Give the workers turns of `steps` steps for `rounds` rounds.

    The order of the turns is reversed in every other round, so that no contender always
    runs first (right after another's turn) or last, and neighbours in the order run
    back to back.

    Returns:
        `{"wall": {name: [round 1 step times, ...]}, "cpu": {...}}` in seconds: wall-clock
        step times and the worker's CPU time per step.
    """
    times = {"wall": {name: [] for name in workers}, "cpu": {name: [] for name in workers}}
    order = list(workers)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            result = workers[name].run(steps)
            for kind in times:
                times[kind][name].append(result[kind])
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return times


def ratio(times: dict[str, list[list[float]]], numerator: str, denominator: str) -> dict:
    """The step-time ratio `numerator / denominator`, round by round.

    Args:
        times: `{name: [round 1 step times, ...]}` (one kind of `interleave`'s result).
        numerator: A contender's name.
        denominator: Another's.

    Returns:
        `{"rounds": [ratio of the round medians, ...], "median", "min", "max"}` over the
        rounds, `"q1"` and `"q3"` (quartiles of the rounds' ratios), and `"pooled"`: the
        ratio of the medians of all steps.
    """
    per_round = [
        statistics.median(a) / statistics.median(b)
        for a, b in zip(times[numerator], times[denominator], strict=True)
    ]
    quartiles = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
    return {
        "rounds": per_round,
        "median": statistics.median(per_round),
        "min": min(per_round),
        "max": max(per_round),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "pooled": median_step(times[numerator]) / median_step(times[denominator]),
    }


def median_step(rounds: list[list[float]]) -> float:
    """The median of all step times of one contender, in seconds."""
    return statistics.median(t for round_times in rounds for t in round_times)


def write_json(path: str, record: dict) -> None:
    """Write `record` as indented JSON, creating the folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")


def workers_record(infos: dict, times: dict) -> dict:
    """The record of each worker: what it built and its raw wall-clock and CPU step times."""
    wall, cpu = times["wall"], times["cpu"]
    return {n: {"info": infos[n], "step_seconds": wall[n], "cpu_seconds": cpu[n]} for n in wall}


def write_results(out: str, record: dict, lines: list[str]) -> None:
    """Write `record` to `out.json` and the printed summary `lines` to `out.txt`."""
    write_json(out + ".json", record)
    with open(out + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")


def machine_state() -> dict:
    """CPU count and load averages (1, 5, 15 min), for the record of a run."""
    return {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}


def describe(r: dict) -> str:
    """`ratio`'s result in one line: median, quartiles, range, pooled."""
    return (
        f"{r['median']:.3f}  quartiles [{r['q1']:.3f}, {r['q3']:.3f}]  range "
        f"[{r['min']:.3f}, {r['max']:.3f}]  pooled {r['pooled']:.3f}"
    )


def report_steps(
    say: Callable[[str], None],
    times: dict,
    rounds: int,
    steps: int,
    batch: int,
    before: dict,
    after: dict,
    width: int,
) -> None:
    """Print the run's conditions (rounds, load before and after) and, per contender, the
    median step time, images per second and CPU time per step; `width` is the name
    column's."""
    say(
        f"{rounds} rounds x {steps} steps per worker, interleaved; load average "
        f"(1 min) {before['loadavg'][0]:.2f} before, {after['loadavg'][0]:.2f} after, "
        f"{before['cpus']} cores"
    )
    wall, cpu = times["wall"], times["cpu"]
    say(f"{'worker':{width}s} {'median step (ms)':>17s} {'images/s':>9s} {'CPU time (ms)':>14s}")
    for n in wall:
        step = median_step(wall[n])
        say(
            f"{n:{width}s} {1000 * step:17.1f} {batch / step:9.1f} "
            f"{1000 * median_step(cpu[n]):14.1f}"
        )
