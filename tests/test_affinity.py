"""--cpu-affinity: the policy with a fake clock and fake CPU readings, the thread pinning on
real threads, and a real server that pins its pool under a blocking app."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.net import free_port
from tests.helpers.process import Process
from wsgipool import affinity
from wsgipool.affinity import (
    CHECK_INTERVAL,
    FIRST_BACKOFF,
    MAX_BACKOFF,
    PIN_THREADS,
    TRIAL,
    UNPIN_AWAKE,
    UNPIN_TARGET,
    AffinityPolicy,
    CpuAffinity,
    Reading,
    ThreadPinning,
    make_cpu_affinity,
    read_cpu_busy,
)

CPUS = (0, 1, 2, 3)
ALL = frozenset(CPUS)


class Machine:
    """Fake readings: each check advances the clock by CHECK_INTERVAL, during which the
    process uses ``own`` of a CPU (all on the pinned one when pinned, spread otherwise),
    the rest of the machine ``others[cpu]`` of each CPU, and the pool takes ``rate``
    requests per second."""

    def __init__(self, policy: AffinityPolicy, others: dict[int, float] | None = None) -> None:
        self.policy = policy
        self.now = 1000.0
        self.busy = dict.fromkeys(policy.cpus, 0.0)
        self.others = others or dict.fromkeys(policy.cpus, 0.0)
        self.process_cpu = 0.0
        self.taken = 0
        self.decisions: list[frozenset[int] | None] = []

    def check(
        self, target: int, own: float = 0.3, rate: float = 1000.0, awake: int | None = None
    ) -> frozenset[int] | None:
        step = CHECK_INTERVAL
        self.now += step
        pinned = self.policy.pinned
        for cpu in self.busy:
            mine = (own if cpu == pinned else 0.0) if pinned is not None else own / len(self.busy)
            self.busy[cpu] += (self.others[cpu] + mine) * step
        self.process_cpu += own * step
        self.taken += int(rate * step)
        decision = self.policy.update(
            Reading(
                self.now,
                dict(self.busy),
                self.process_cpu,
                self.taken,
                target,
                target if awake is None else awake,
            )
        )
        self.decisions.append(decision)
        return decision

    def run(self, seconds: float, target: int, **kwargs: Any) -> None:
        for _ in range(round(seconds / CHECK_INTERVAL)):
            self.check(target, **kwargs)


@pytest.mark.parametrize("own", [0.05, 1.0], ids=["fast machine", "slow machine"])
def test_a_cpu_bound_load_is_never_pinned(own):
    # Hello world's pool: target 1 however busy the CPU is.
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(60, target=1, own=own)
    assert machine.policy.pinned is None
    assert all(decision is None for decision in machine.decisions)


@pytest.mark.parametrize("own", [0.1, 0.95], ids=["fast machine", "slow machine"])
def test_a_blocking_load_is_pinned_at_the_second_check(own):
    # The first reading only starts a window; the decision reads ratios, so a slow machine
    # (its CPU nearly busy) decides as a fast one does.
    machine = Machine(AffinityPolicy(CPUS))
    assert machine.check(target=126, own=own) is None
    assert machine.check(target=126, own=own) == frozenset({0})
    machine.run(5, target=126, own=own)
    assert machine.policy.pinned == 0
    assert machine.decisions[2:] == [None] * 10


def test_the_pin_goes_to_the_cpu_the_rest_of_the_machine_leaves_idle():
    machine = Machine(AffinityPolicy(CPUS), others={0: 0.9, 1: 0.7, 2: 0.1, 3: 0.8})
    machine.run(1, target=50)
    assert machine.policy.pinned == 2


@pytest.mark.parametrize("home", [0, 1, 2, 3, 5])
def test_worker_processes_start_on_their_home_cpu_when_all_are_idle(home):
    machine = Machine(AffinityPolicy(CPUS, home=home))
    machine.run(1, target=50)
    assert machine.policy.pinned == home % len(CPUS)


def test_the_hysteresis_band_keeps_a_target_near_the_threshold_where_it_is():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(2, target=PIN_THREADS - 1)  # between: not pinned
    assert machine.policy.pinned is None
    machine.run(1, target=PIN_THREADS)
    assert machine.policy.pinned == 0
    machine.run(5, target=UNPIN_TARGET, awake=PIN_THREADS)  # between: stays pinned
    assert machine.policy.pinned == 0
    assert machine.check(target=UNPIN_TARGET - 1, awake=PIN_THREADS) == ALL
    assert machine.policy.pinned is None


def test_a_few_long_transfers_are_not_pinned_and_a_pool_that_empties_is_unpinned():
    # Four downloads waiting on their clients: a high target, four workers awake.
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(30, target=40, awake=4)
    assert machine.policy.pinned is None
    machine.run(1, target=40, awake=PIN_THREADS)
    assert machine.policy.pinned == 0
    machine.run(5, target=40, awake=UNPIN_AWAKE)  # between: stays pinned
    assert machine.policy.pinned == 0
    assert machine.check(target=40, awake=UNPIN_AWAKE - 1) == ALL


def test_a_saturated_pin_that_does_not_help_is_tried_again_ever_later():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(1, target=100, own=1.0, rate=9000)
    pinned_at = machine.now
    assert machine.policy.pinned == 0
    # No trial before the first back-off, however busy.
    machine.run(FIRST_BACKOFF - 1, target=100, own=1.0, rate=9000)
    assert machine.policy.pinned == 0
    trials = []
    for _ in range(round(3 * MAX_BACKOFF / CHECK_INTERVAL)):
        decision = machine.check(target=100, own=1.0, rate=9000 if machine.policy.pinned else 6000)
        if decision == ALL:
            trials.append(machine.now - pinned_at)
    # Unpinned it took less work: each trial ends pinned, and the waits between them double.
    assert machine.policy.pinned == 0
    gaps = [later - earlier for earlier, later in itertools.pairwise(trials)]
    assert trials[0] == pytest.approx(FIRST_BACKOFF, abs=1)
    assert gaps[:4] == pytest.approx([TRIAL + 2 * FIRST_BACKOFF * 2**i for i in range(4)], abs=1)
    assert max(gaps) <= MAX_BACKOFF + TRIAL + 1


def test_a_saturated_pin_that_holds_the_pool_back_is_lifted():
    # An app whose work runs without the GIL (numpy, bcrypt): unpinned it takes more work.
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(FIRST_BACKOFF + 1, target=20, own=1.0, rate=1000)
    assert machine.policy.pinned is None  # on trial
    machine.run(TRIAL, target=20, own=2.5, rate=2500)
    assert machine.policy.pinned is None
    assert machine.decisions[-1] is None  # the trial ended: stays on every CPU
    # It holds unpinned for the doubled back-off, then pins and judges again.
    machine.run(2 * FIRST_BACKOFF - 1, target=20, own=2.5, rate=2500)
    assert machine.policy.pinned is None
    machine.run(1.5, target=20, own=1.0, rate=1000)
    assert machine.policy.pinned == 0


def test_a_pin_that_does_not_fill_its_cpu_is_not_tried():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(10 * FIRST_BACKOFF, target=100, own=0.6)
    assert machine.policy.pinned == 0
    assert machine.decisions.count(None) == len(machine.decisions) - 1


def test_the_pool_moves_off_a_cpu_that_others_keep_busy_but_not_for_a_spike():
    others = dict.fromkeys(CPUS, 0.0)
    machine = Machine(AffinityPolicy(CPUS), others=others)
    machine.run(1, target=100, own=0.8)
    assert machine.policy.pinned == 0
    others[0] = 0.9  # one check: a spike
    machine.check(target=100, own=0.8)
    others[0] = 0.0
    machine.run(2, target=100, own=0.8)
    assert machine.policy.pinned == 0
    others[0] = 0.9  # another process settles there
    machine.run(1.5, target=100, own=0.8)
    assert machine.policy.pinned == 1


def test_a_load_that_stops_mid_trial_leaves_the_pool_unpinned_and_judged_afresh():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(FIRST_BACKOFF + 1, target=100, own=1.0, rate=9000)
    assert machine.policy.on_trial
    machine.run(TRIAL * 2, target=1, own=0.0, rate=0)  # the load is gone
    assert machine.policy.pinned is None
    assert not machine.policy.on_trial
    assert all(decision is None for decision in machine.decisions[-4:])
    # A new waiting load is pinned at once: no hold, no back-off from the old one.
    machine.run(1, target=100, own=0.5)
    assert machine.policy.pinned == 0


def test_a_won_trial_does_not_hold_off_the_next_load():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(FIRST_BACKOFF + 1, target=20, own=1.0, rate=1000)
    machine.run(TRIAL, target=20, own=2.5, rate=2500)  # won: held unpinned
    assert machine.policy.pinned is None
    machine.run(1, target=1, own=0.1)  # that load ends
    machine.run(1, target=100, own=0.5)  # another begins
    assert machine.policy.pinned == 0


def test_no_trial_without_work_taken_while_pinned():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(FIRST_BACKOFF * 3, target=100, own=1.0, rate=0)
    assert machine.policy.pinned == 0
    assert not machine.policy.on_trial


def test_a_cpu_the_readings_lose_is_left_and_never_chosen():
    machine = Machine(AffinityPolicy(CPUS))
    machine.run(1, target=100, own=0.5)
    assert machine.policy.pinned == 0
    del machine.busy[0], machine.others[0]  # offline, or out of the cpuset
    machine.run(1, target=100, own=0.5)
    assert machine.policy.pinned == 1
    for cpu in (1, 2):
        del machine.busy[cpu], machine.others[cpu]
    assert machine.check(target=100, own=0.5) == ALL  # one left: nothing to choose
    assert machine.policy.pinned is None


def test_a_fault_in_a_check_turns_the_feature_off_instead_of_raising():
    cpus = (0, 1)

    def broken() -> dict[int, float]:
        raise IndexError("a /proc/stat line too short")

    pinning = ThreadPinning(cpus)
    controller = CpuAffinity(AffinityPolicy(cpus), pinning, read_busy=broken)
    controller.check(1.0, 0, 100, 100)  # does not raise
    assert controller.disabled
    assert pinning.current == frozenset(cpus)


def test_a_policy_needs_two_cpus():
    with pytest.raises(ValueError):
        AffinityPolicy([3])


def test_proc_stat_busy_time_leaves_out_idle_and_iowait(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 300 9000 50 0 0 0 0 0\n"
        "cpu0 100 10 200 4000 40 5 5 0 0 0\n"
        "cpu1 200 0 100 5000 10 0 0 30 0 0\n"
        "intr 12345 0 0\n"
        "ctxt 999\n"
    )
    assert read_cpu_busy(str(stat)) == {0: 320 / tick, 1: 330 / tick}


def test_off_and_places_without_a_choice_get_no_affinity(monkeypatch):
    assert make_cpu_affinity("off") is None
    monkeypatch.setattr(affinity, "GIL_ENABLED", False)  # free-threaded: threads run in parallel
    assert make_cpu_affinity("auto") is None


needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs sched_setaffinity and two CPUs",
)
BATCH: int = getattr(os, "SCHED_BATCH", -1)
needs_batch = pytest.mark.skipif(
    BATCH < 0
    or not hasattr(os, "sched_setaffinity")
    or len(os.sched_getaffinity(0)) < 2
    or os.sched_getscheduler(0) != os.SCHED_OTHER,  # under `chrt`, the pin leaves it alone
    reason="needs SCHED_BATCH, sched_setaffinity, two CPUs and the default policy",
)


@contextlib.contextmanager
def pool_members(pinning: ThreadPinning, count: int) -> Iterator[list[int]]:
    """``count`` threads that joined ``pinning``, alive until the block ends; their ids."""
    joined = threading.Barrier(count + 1)
    done = threading.Event()
    ids: list[int] = []

    def member() -> None:
        pinning.join()
        ids.append(threading.get_native_id())
        joined.wait()
        done.wait(10)
        pinning.leave()

    threads = [threading.Thread(target=member) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        joined.wait(10)
        yield ids
    finally:
        done.set()
        for thread in threads:
            thread.join(10)


@needs_batch
def test_pinning_moves_joined_threads_and_new_ones_join_where_the_pool_is():
    cpus = sorted(os.sched_getaffinity(0))
    pinning = ThreadPinning(cpus)
    with pool_members(pinning, 2) as ids:
        pinning.apply(frozenset({cpus[1]}))
        assert [os.sched_getaffinity(thread_id) for thread_id in ids] == [{cpus[1]}] * 2
        assert [os.sched_getscheduler(thread_id) for thread_id in ids] == [BATCH] * 2
        assert os.sched_getaffinity(0) == set(cpus)  # not a member: untouched
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        late: list[set[int]] = []
        late_policy: list[int] = []
        app_thread: list[int] = []
        app_thread_done = threading.Event()

        def started_by_the_app() -> None:
            app_thread.append(threading.get_native_id())
            app_thread_done.wait(10)

        def newcomer_run() -> None:
            pinning.join()
            late.append(os.sched_getaffinity(0))
            late_policy.append(os.sched_getscheduler(0))
            # A thread the application starts from a pinned thread inherits the pin.
            threading.Thread(target=started_by_the_app, daemon=True).start()
            pinning.leave()

        newcomer = threading.Thread(target=newcomer_run)
        newcomer.start()
        newcomer.join(10)
        assert late == [{cpus[1]}]
        assert late_policy == [BATCH]
        assert wait_for(lambda: bool(app_thread))
        assert os.sched_getaffinity(app_thread[0]) == {cpus[1]}
        assert os.sched_getscheduler(app_thread[0]) == BATCH
        pinning.apply(frozenset(cpus))
        assert [os.sched_getaffinity(thread_id) for thread_id in ids] == [set(cpus)] * 2
        assert [os.sched_getscheduler(thread_id) for thread_id in ids] == [os.SCHED_OTHER] * 2
        assert os.sched_getaffinity(app_thread[0]) == set(cpus)  # unpinned with the pool
        assert os.sched_getscheduler(app_thread[0]) == os.SCHED_OTHER
        app_thread_done.set()


def pinned_member(pinning: ThreadPinning, cpus: frozenset[int]) -> tuple[set[int], int]:
    """Pin ``pinning`` to ``cpus`` with one member thread; its CPUs and policy then."""
    with pool_members(pinning, 1) as (member,):
        pinning.apply(cpus)
        return os.sched_getaffinity(member), os.sched_getscheduler(member)


@needs_batch
def test_a_process_started_under_another_policy_keeps_it_when_pinned():
    cpus = sorted(os.sched_getaffinity(0))
    made: list[ThreadPinning] = []

    def make_under_batch() -> None:
        # As under `chrt --batch`: the policy is the operator's, not the pin's to change.
        os.sched_setscheduler(0, BATCH, os.sched_param(0))
        made.append(ThreadPinning(cpus))

    maker = threading.Thread(target=make_under_batch)
    maker.start()
    maker.join(10)
    assert pinned_member(made[0], frozenset({cpus[0]})) == ({cpus[0]}, os.SCHED_OTHER)


@needs_batch
def test_unpinning_leaves_a_policy_the_application_chose():
    cpus = sorted(os.sched_getaffinity(0))
    pinning = ThreadPinning(cpus)
    chosen, done = threading.Event(), threading.Event()
    app_thread: list[int] = []

    def idle_by_choice() -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        app_thread.append(threading.get_native_id())
        chosen.set()
        done.wait(10)

    thread = threading.Thread(target=idle_by_choice)
    thread.start()
    try:
        assert chosen.wait(10)
        assert pinned_member(pinning, frozenset({cpus[0]}))[1] == BATCH
        pinning.apply(frozenset(cpus))  # the unpinning sweep reaches every thread
        assert os.sched_getaffinity(app_thread[0]) == set(cpus)
        assert os.sched_getscheduler(app_thread[0]) == os.SCHED_IDLE
    finally:
        done.set()
        thread.join(10)


@needs_batch
def test_a_refused_policy_change_still_pins(monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    pinning = ThreadPinning(cpus)

    def refused(*args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # as a seccomp filter answers

    monkeypatch.setattr(os, "sched_setscheduler", refused)
    assert pinned_member(pinning, frozenset({cpus[1]})) == ({cpus[1]}, os.SCHED_OTHER)


def sleepy_app(environ, start_response):
    time.sleep(0.02)  # a backend call: the pool's samples see requests that mostly wait
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def pool_placements(older: set[threading.Thread]) -> list[tuple[set[int], int]]:
    """The CPUs and scheduling policy of each live pool thread started after ``older`` was
    taken (another test's server's are not this one's; one ending meanwhile is skipped)."""
    placements = []
    for thread in threading.enumerate():
        if thread in older or not thread.native_id:
            continue
        if thread.name.startswith(("wsgipool-worker", "wsgipool-listener")):
            with contextlib.suppress(ProcessLookupError):
                placements.append(
                    (
                        os.sched_getaffinity(thread.native_id),
                        os.sched_getscheduler(thread.native_id),
                    )
                )
    return placements


class Load:
    """Connections (twelve unless told) asking a server until stopped; ``served`` counts
    the answers."""

    def __init__(self, clients: int = 12) -> None:
        self.clients = clients
        self.served = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[threading.Thread] = []

    def start(self, port: int) -> None:
        # More connections than the 8 worker threads: work always waits, so every worker
        # is awake at each check.
        for _ in range(self.clients):
            client = threading.Thread(target=self._ask, args=(port,), daemon=True)
            client.start()
            self._clients.append(client)

    def _ask(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not self._stop.is_set():
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"
            with self._lock:
                self.served += 1
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        for client in self._clients:
            client.join(10)


@pytest.fixture
def load() -> Iterator[Load]:
    running = Load()
    yield running
    running.stop()


def wait_for(condition: Callable[[], bool], deadline: float = 20.0) -> bool:
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@needs_batch
def test_a_server_under_a_blocking_app_keeps_its_pool_on_one_cpu(serve, load, caplog):
    caplog.set_level("INFO", logger="wsgipool.error")
    older = set(threading.enumerate())
    live = serve(sleepy_app, threads=8)
    load.start(live.port)

    def on_one_cpu() -> bool:
        placements = pool_placements(older)
        return (
            all(len(cpus) == 1 and policy == BATCH for cpus, policy in placements)
            and len({frozenset(cpus) for cpus, _policy in placements}) == 1
        )  # every pool thread, the same CPU, none preempting another on waking

    assert wait_for(on_one_cpu)
    assert "cpu affinity: the pool keeps to CPU" in caplog.text


@needs_batch
def test_a_stopped_server_puts_back_the_threads_its_application_started(serve, load):
    started: list[int] = []
    release = threading.Event()
    lock = threading.Lock()

    def app_starting_a_helper(environ, start_response):
        # Lazily, from a request served once the pool is pinned: the helper inherits the pin.
        with lock:
            if not started and len(os.sched_getaffinity(0)) == 1:
                ready = threading.Event()

                def helper() -> None:
                    started.append(threading.get_native_id())
                    ready.set()
                    release.wait(30)

                threading.Thread(target=helper, daemon=True).start()
                ready.wait(10)
        return sleepy_app(environ, start_response)

    cpus = os.sched_getaffinity(0)
    live = serve(app_starting_a_helper, threads=8)
    load.start(live.port)
    try:
        assert wait_for(lambda: bool(started))
        assert len(os.sched_getaffinity(started[0])) == 1
        assert os.sched_getscheduler(started[0]) == BATCH
        load.stop()
        live.server.stop(timeout=5)
        # The process lives on after the server: its threads get every CPU back.
        assert os.sched_getaffinity(started[0]) == cpus
        assert os.sched_getscheduler(started[0]) == os.SCHED_OTHER
    finally:
        release.set()


@needs_batch
def test_cpu_affinity_off_leaves_the_pool_where_the_scheduler_puts_it(serve, load, caplog):
    caplog.set_level("INFO", logger="wsgipool.error")
    older = set(threading.enumerate())
    live = serve(sleepy_app, threads=8, cpu_affinity="off")
    load.start(live.port)
    # Ten checks' worth of this load (8 threads busy 20 ms each): auto pins at the second.
    enough = int(10 * CHECK_INTERVAL * 8 / 0.02)

    def unpinned_until_enough() -> bool:
        placements = pool_placements(older)
        assert all(len(cpus) > 1 and policy == os.SCHED_OTHER for cpus, policy in placements)
        return load.served >= enough

    assert wait_for(unpinned_until_enough, deadline=60)
    assert "cpu affinity" not in caplog.text


SLEEPY_APP = """
import time


def app(environ, start_response):
    time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""

SLEEPY_FLASK_APP = """
import time

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    time.sleep(0.02)
    return "ok"
"""


def front_end_command(front_end: str, port: int, mode: str) -> list[str]:
    """``front_end`` serving the sleepy app with two worker processes of 8 threads each and
    ``--cpu-affinity mode``, as that front end spells them."""
    if front_end in ("cli", "flask"):
        flags = ["-b", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]
        flags += ["--cpu-affinity", mode]
        if front_end == "cli":
            return [sys.executable, "-m", "wsgipool", "sleepy:app", *flags]
        return [sys.executable, "-m", "flask", "--app", "sleepyflask", "serve", *flags]
    call = {
        "serve": f"wsgipool.serve(sleepy.app, bind='127.0.0.1:{port}', workers=2, threads=8, "
        f"cpu_affinity='{mode}')",
        "run_simple": f"wsgipool.run_simple('127.0.0.1', {port}, sleepy.app, processes=2, "
        f"threads=8, cpu_affinity='{mode}')",
        "paste": "from wsgipool.integrations.paste import paste_server_runner; "
        f"paste_server_runner(sleepy.app, {{}}, host='127.0.0.1', port='{port}', "
        f"workers='2', threads='8', cpu_affinity='{mode}')",
    }[front_end]
    return [sys.executable, "-c", f"import sleepy, wsgipool; {call}"]


@needs_two_cpus
@pytest.mark.parametrize("mode", ["auto", "off"])
@pytest.mark.parametrize("front_end", ["cli", "serve", "run_simple", "paste", "flask"])
def test_every_front_end_honours_cpu_affinity_in_its_worker_processes(
    front_end: str, mode: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    if front_end == "flask":
        pytest.importorskip("flask")
    (tmp_path / "sleepy.py").write_text(SLEEPY_APP)
    (tmp_path / "sleepyflask.py").write_text(SLEEPY_FLASK_APP)
    port = free_port()
    proc = spawn(
        command=front_end_command(front_end, port, mode),
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    proc.wait_workers(2)
    load = Load(clients=40)  # enough that each worker process has all 8 threads busy
    load.start(port)
    try:
        if mode == "auto":
            proc.wait_log("cpu affinity: the pool keeps to CPU")
        else:
            # Ten checks' worth of this load in each worker process; auto pins at the second.
            enough = int(2 * 10 * CHECK_INTERVAL * 8 / 0.02)
            assert wait_for(lambda: load.served >= enough, deadline=120)
            assert "cpu affinity" not in proc.log
    finally:
        load.stop()
    assert proc.stop(signal.SIGTERM) == 0
    assert "Traceback" not in proc.log
