"""Twin: one continuous-batching engine replica (vLLM V1 scheduler) advanced in macro-steps of simulated time."""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq
import math
import operator

from infertune import perfmodel
from infertune.sim import histogram

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3

FINISHED = "finished"
ABORTED = "aborted"
REJECTED = "rejected"
CANCELLED = "cancelled"


@dataclasses.dataclass(slots=True, eq=False)
class Request:
    """One request and its life in an engine; times are simulated seconds, NaN until they happen."""

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    state: int = WAITING
    status: str = ""  # "" while in flight; then finished, aborted, rejected or cancelled
    reason: str = ""  # why it was rejected
    replica: str = ""
    cached: int = 0  # prompt tokens from the prefix cache at the last admission
    computed: int = 0  # tokens whose KV is computed in the current prefill
    target: int = 0  # tokens the current prefill computes (prompt + outputs so far, after a preemption)
    generated: int = 0  # output tokens emitted
    blocks: int = 0  # KV blocks held while prefilling
    off: int = 0  # while decoding: KV tokens after engine step n = off + n
    entry_step: int = 0
    entry_generated: int = 0
    done_step: int = 0
    heap_key: int = 0
    saved_blocks: int = 0  # full KV blocks it had computed when last preempted
    evict_mark: int = 0  # the engine's block-allocation count at that moment
    free_before: int = 0  # free blocks then, which are evicted before its own
    scheduled: float = math.nan  # first admission
    first_token: float = math.nan
    last_token: float = math.nan
    finished: float = math.nan
    preemptions: int = 0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.finished - self.arrival

    @property
    def queue_time(self) -> float:
        return self.scheduled - self.arrival

    @property
    def itl(self) -> float:
        """Mean time between this request's output tokens (genai-perf's ITL); NaN with one token."""
        if self.generated < 2:
            return math.nan
        return (self.finished - self.first_token) / (self.generated - 1)


@dataclasses.dataclass(slots=True)
class EngineStats:
    """Cumulative counters and histograms (seconds or tokens), the raw material of /metrics."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    finished: int = 0
    aborted: int = 0
    rejected: int = 0
    cancelled: int = 0
    steps: int = 0
    busy_s: float = 0.0
    bytes_per_gpu: float = 0.0  # HBM bytes moved on each GPU of the replica
    ttft: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    itl: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    tpot: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    e2e: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    queue: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    prefill: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    decode: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    inference: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    prompt_len: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    prompt_len_started: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)
    generation_len: histogram.LogHistogram = dataclasses.field(default_factory=histogram.LogHistogram)


@dataclasses.dataclass(slots=True)
class _Plan:
    """The next steps, decided at `start`: one mixed step (chunks set) or `steps` identical decode steps."""

    start: float
    end: float
    steps: int
    first: float  # duration of the first step
    inc: float  # each further step is this much longer (the batch's KV grows by one token per sequence)
    bytes_first: float
    bytes_inc: float
    chunks: list[tuple[Request, int]] | None
    mutated: bool  # admissions or block allocations were made for it: it cannot be dropped

    def started_before(self, t: float) -> int:
        """How many of its steps start before t; step j starts at j x first + inc x j(j-1)/2."""
        dt = t - self.start
        if dt <= 0:
            return 0
        if self.steps == 1:
            return 1
        a, b = self.inc / 2.0, self.first - self.inc / 2.0
        j = math.ceil(dt / b) if a == 0 else math.ceil((-b + math.sqrt(b * b + 4 * a * dt)) / (2 * a))
        j = max(0, min(self.steps, j))
        while j > 0 and self._offset(j - 1) >= dt:
            j -= 1
        while j < self.steps and self._offset(j) < dt:
            j += 1
        return j

    def ended_by(self, t: float) -> int:
        """How many of its steps end at or before t."""
        n = self.started_before(t)
        while n > 0 and self.start + self._offset(n) > t:
            n -= 1
        return n

    def _offset(self, j: int) -> float:
        return j * self.first + self.inc * j * (j - 1) / 2.0


@functools.cache
def _pad_rows(block: int) -> tuple[tuple[int, ...], ...]:
    """row[x][m] = (-x - m) mod block: the padding a sequence at offset residue x needs after step m."""
    return tuple(tuple((-x - m) % block for m in range(block)) for x in range(block))


class SimEngine:
    """One replica: admission by max_num_seqs and free KV blocks, a token budget per step, chunked prefill,
    preemption by recompute (newest first) and a prefix-cache hit ratio.

    Between events (an arrival, a completion, the end of a prefill chunk, the KV cache running out) every
    step is a plain decode step of the same batch whose KV grows by one token per sequence, so the engine
    advances all of them at once: step times form an arithmetic series. Call `submit(request, now)` and
    `advance(until)`; `next_event_time()` says when the engine's state next changes on its own.
    """

    def __init__(self, replica: perfmodel.Replica, *, name: str = "replica-0", start: float = 0.0) -> None:
        self.replica = replica
        self.name = name
        self.c = perfmodel.coefficients(replica)  # raises ModelDoesNotFit
        self.now = start  # end of the last committed step (or idle time)
        self.step_no = 0
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: dict[int, Request] = {}  # admission order; the last is preempted first
        self.prefilling: dict[int, Request] = {}
        self.finished: list[Request] = []
        self.stats = EngineStats()
        # Decoding sequences, in aggregate: count, sum of offsets, offsets' residues mod the block size,
        # and a heap of (done_step, key, request).
        self._n_dec = 0
        self._sum_off = 0
        self._residues = [0] * self.c.block_size
        # _pad[m]: sum over decoding sequences of (-(off + m)) mod block, the rounding up that turns their KV
        # tokens after step m into whole blocks; kept per residue change so a query costs O(1), not O(block).
        self._pad = [0] * self.c.block_size
        self._pad_rows = _pad_rows(self.c.block_size)
        self._heap: list[tuple[int, int, Request]] = []
        self._keys = 0
        self._prefill_blocks = 0
        self._allocated = 0  # blocks ever allocated, to tell how much of a preempted request was evicted
        self._plan: _Plan | None = None

    # ------------------------------------------------------------------ public API

    @property
    def outstanding(self) -> int:
        """Requests accepted and not finished (running and waiting)."""
        return len(self.running) + len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_blocks_used(self) -> int:
        return self._dec_blocks(self.step_no - 1) + self._prefill_blocks

    @property
    def kv_usage(self) -> float:
        """Share of KV blocks in use after the last committed step, 0-1."""
        return self.kv_blocks_used / self.c.kv_blocks

    def submit(self, request: Request, now: float) -> None:
        """Accept a request at `now`; it joins the first step that starts at or after `now`."""
        self._sync(now)
        request.replica = self.name
        c = self.c
        if request.prompt_tokens < 1 or request.output_tokens < 1:
            self._reject(request, now, "prompt and output must be at least one token")
            return
        if request.prompt_tokens + request.output_tokens > c.kv_blocks * c.block_size:
            self._reject(request, now, f"prompt + output exceed the KV cache of {c.kv_blocks * c.block_size} tokens")
            return
        if not c.chunked_prefill and request.prompt_tokens + request.output_tokens > c.token_budget:
            # A resumed request re-prefills prompt + outputs in one step, so both must fit the budget.
            self._reject(request, now, f"prompt + output exceed maxNumBatchedTokens ({c.token_budget})")
            return
        request.state = WAITING
        self.waiting.append(request)

    def advance(self, until: float) -> None:
        """Run every step that starts before `until`; the last may end after it."""
        while True:
            plan = self._ensure_plan()
            if plan is None:
                self.now = max(self.now, until)
                return
            if plan.end <= until:
                self._commit(plan, plan.steps)
                continue
            n = plan.started_before(until)
            if n == 0:
                return
            self._commit(plan, n)

    def next_event_time(self) -> float:
        """When the planned steps end and the state next changes (inf when idle)."""
        plan = self._ensure_plan()
        return math.inf if plan is None else plan.end

    def pop_finished(self) -> list[Request]:
        """Requests that left the engine (finished, aborted, rejected, cancelled) since the last call."""
        out, self.finished = self.finished, []
        return out

    def abort_all(self, now: float) -> list[Request]:
        """The pod is gone: every request in flight ends as aborted at `now`; the step in flight is lost."""
        while (plan := self._ensure_plan()) is not None and plan.end <= now:
            self._commit(plan, plan.steps)
        if plan is not None:
            n = plan.ended_by(now)
            if n:
                self._commit(plan, n)
            self._plan = None
        out = [*self.running.values(), *self.waiting]
        for r in out:
            if r.state == DECODE:
                r.generated = r.entry_generated + (self.step_no - r.entry_step)
            r.state = DONE
            r.status = ABORTED
            r.finished = now
        self.stats.aborted += len(out)
        self.running.clear()
        self.prefilling.clear()
        self.waiting.clear()
        self._n_dec = self._sum_off = self._prefill_blocks = 0
        self._residues = [0] * self.c.block_size
        self._pad = [0] * self.c.block_size
        self._heap.clear()
        self.now = max(self.now, now)
        self.finished.extend(out)
        return out

    def cancel(self, request: Request, now: float) -> bool:
        """The client went away: drop one request at `now`; False when it was no longer in flight."""
        self._sync(now)
        if request.state == DONE:
            return False
        if request.state == WAITING:
            self.waiting.remove(request)
        else:
            self._remove_running(request)
        request.state = DONE
        request.status = CANCELLED
        request.finished = max(now, self.now)
        self.stats.cancelled += 1
        self.finished.append(request)
        return True

    # ------------------------------------------------------------------ KV blocks of decoding sequences

    def _dec_blocks(self, n: int) -> int:
        """Blocks the decoding sequences need for step n: sum of ceil((off + n) / block)."""
        if self._n_dec == 0:
            return 0
        # 3 sequences at offsets 5, 20, 31 after step 1 (block 16): 6 + 21 + 32 = 59 tokens, padded by
        # 10 + 11 + 0 = 21 to 80 = 5 blocks.
        return (self._sum_off + self._n_dec * n + self._pad[n % self.c.block_size]) // self.c.block_size

    def _kv_steps(self, n: int, slack: int) -> int:
        """Steps from n the decoding batch can run before it needs more than `slack` further blocks.

        A sequence takes a new block at step m when (off + m) % block == 1, so over `block` steps the batch
        takes exactly one block per sequence: 88 sequences with 500 free blocks run 5 x 16 + a few steps.
        """
        b = self._n_dec
        bs = self.c.block_size
        full, rem = divmod(slack, b)
        grown = 0
        res = self._residues
        for t in range(1, bs + 1):
            grown += res[(1 - n - t) % bs]
            if grown > rem:
                return full * bs + t
        return (full + 1) * bs  # unreachable: a full period adds b > rem blocks

    # ------------------------------------------------------------------ scheduling

    def _sync(self, now: float) -> None:
        """Run the steps that start before `now`, so that a request arriving at `now` joins the next one."""
        self.advance(now)
        if self._plan is not None and not self._plan.mutated:
            self._plan = None  # decided before the arrival; decide again with it

    def _ensure_plan(self) -> _Plan | None:
        if self._plan is not None:
            return self._plan
        if not self.running and not self.waiting:
            return None
        c = self.c
        bs = c.block_size
        n = self.step_no
        total = c.kv_blocks
        preempted = False
        # Decoding sequences first: each needs room for its next token; preempt the newest until they fit.
        while self._n_dec and self._dec_blocks(n) + self._prefill_blocks > total:
            self._preempt(self._newest())
            preempted = True
        budget = c.token_budget - self._n_dec
        free = total - self._dec_blocks(n) - self._prefill_blocks
        chunks: list[tuple[Request, int]] = []
        for r in list(self.prefilling.values()):
            if budget <= 0 or r.state != PREFILL:
                break
            want = min(r.target - r.computed, budget)
            need = -(-(r.computed + want) // bs) - r.blocks
            while need > free:
                victim = self._newest()
                self._preempt(victim)
                preempted = True
                free = total - self._dec_blocks(n) - self._prefill_blocks
                if victim is r:
                    break
            if r.state != PREFILL:
                break
            r.blocks += need
            self._prefill_blocks += need
            self._allocated += need
            free -= need
            budget -= want
            chunks.append((r, want))
        if not preempted:
            self._admit(chunks, budget, free)
        if chunks:
            return self._plan_mixed(chunks)
        if self._n_dec:
            return self._plan_decode()
        if self.running or self.waiting:
            raise RuntimeError(f"{self.name}: requests are waiting but nothing can be scheduled")
        return None

    def _admit(self, chunks: list[tuple[Request, int]], budget: int, free: int) -> None:
        """Waiting requests, oldest first, while the step has tokens, the batch has seats and KV has blocks."""
        c = self.c
        bs = c.block_size
        waiting = self.waiting
        while waiting and budget > 0 and len(self.running) < c.seq_limit:
            r = waiting[0]
            target = r.prompt_tokens + r.generated
            cached = perfmodel.prefix_hit_tokens(c, r.prompt_tokens)
            if r.saved_blocks and c.prefix_caching:
                cached = max(cached, min(self._survivors(r) * bs, target - 1))
            want = target - cached
            if not c.chunked_prefill and want > budget:
                break
            want = min(want, budget)
            # Cached prefix blocks are counted as this request's own (a conservative simplification).
            need = -(-(cached + want) // bs)
            if need > free:
                break
            waiting.popleft()
            r.state = PREFILL
            r.target = target
            r.cached = cached
            r.computed = cached
            r.blocks = need
            self._prefill_blocks += need
            self._allocated += need
            free -= need
            budget -= want
            self.running[r.id] = r
            self.prefilling[r.id] = r
            if math.isnan(r.scheduled):
                r.scheduled = self.now
            self.stats.prefix_queries += target
            self.stats.prefix_hits += cached
            chunks.append((r, want))

    def _plan_mixed(self, chunks: list[tuple[Request, int]]) -> _Plan:
        c = self.c
        n = self.step_no
        b = self._n_dec
        kv = self._sum_off + b * n
        tokens = b
        pairs = 0.0
        for r, want in chunks:
            p0, p1 = r.computed, r.computed + want
            tokens += want
            kv += p1
            pairs += (p1 * (p1 + 1) - p0 * (p0 + 1)) / 2.0
        t = c.step_seconds(tokens, kv, pairs)
        plan = _Plan(
            start=self.now, end=self.now + t, steps=1, first=t, inc=0.0,
            bytes_first=c.bytes_moved(tokens, kv), bytes_inc=0.0, chunks=chunks, mutated=True,
        )
        self._plan = plan
        return plan

    def _plan_decode(self) -> _Plan:
        c = self.c
        n = self.step_no
        b = self._n_dec
        heap = self._heap
        while heap[0][2].state != DECODE or heap[0][1] != heap[0][2].heap_key:
            heapq.heappop(heap)  # stale: preempted or cancelled
        steps = heap[0][0] - n + 1
        slack = c.kv_blocks - self._prefill_blocks - self._dec_blocks(n)
        steps = min(steps, self._kv_steps(n, slack))
        kv0 = self._sum_off + b * n
        first = c.step_seconds(b, kv0)
        inc = c.kv_s_per_token * b
        total = steps * first + inc * steps * (steps - 1) / 2.0
        plan = _Plan(
            start=self.now, end=self.now + total, steps=steps, first=first, inc=inc,
            bytes_first=c.bytes_moved(b, kv0), bytes_inc=c.kv_bytes_per_token * b, chunks=None, mutated=False,
        )
        self._plan = plan
        return plan

    # ------------------------------------------------------------------ committing steps

    def _commit(self, plan: _Plan, k: int) -> None:
        """Apply the first k steps of the plan: time, tokens, latencies, finished and newly decoding requests."""
        self._plan = None
        stats = self.stats
        duration = k * plan.first + plan.inc * k * (k - 1) / 2.0
        self.now = plan.start + duration
        stats.busy_s += duration
        stats.steps += k
        stats.bytes_per_gpu += k * plan.bytes_first + plan.bytes_inc * k * (k - 1) / 2.0
        b = self._n_dec
        if b:
            stats.itl.observe_series(plan.first, plan.inc, k, b)
            stats.generation_tokens += b * k
            self._allocated += self._dec_blocks(self.step_no + k - 1) - self._dec_blocks(self.step_no - 1)
        self.step_no += k
        now = self.now
        heap = self._heap
        while heap and heap[0][0] < self.step_no:
            _, key, r = heapq.heappop(heap)
            if r.state == DECODE and r.heap_key == key:
                self._remove_decoder(r)
                r.generated = r.output_tokens
                self._finish(r, now)
        if plan.chunks is None:
            return
        for r, want in plan.chunks:
            if r.state != PREFILL:
                continue
            r.computed += want
            if r.computed < r.target:
                continue
            # The prefill is complete: the step samples the next token.
            del self.prefilling[r.id]
            self._prefill_blocks -= r.blocks
            r.blocks = 0
            if r.generated == 0:
                r.first_token = now
                stats.ttft.observe(now - r.arrival)
                stats.prompt_tokens += r.prompt_tokens
                stats.prompt_len_started.observe(r.prompt_tokens)
            else:
                stats.itl.observe(now - r.last_token)  # the stall a preemption caused
            r.generated += 1
            stats.generation_tokens += 1
            r.last_token = now
            if r.generated >= r.output_tokens:
                del self.running[r.id]
                self._finish(r, now)
            else:
                self._add_decoder(r)

    def _finish(self, r: Request, now: float) -> None:
        r.state = DONE
        r.status = FINISHED
        r.finished = now
        r.last_token = now
        self.running.pop(r.id, None)
        stats = self.stats
        stats.finished += 1
        stats.e2e.observe(now - r.arrival)
        stats.queue.observe(r.scheduled - r.arrival)
        stats.inference.observe(now - r.scheduled)
        stats.prefill.observe(r.first_token - r.scheduled)
        stats.decode.observe(now - r.first_token)
        # vLLM V1 observes both lengths when a request finishes (record_finished_request in v1/metrics/loggers.py).
        stats.prompt_len.observe(r.prompt_tokens)
        stats.generation_len.observe(r.generated)
        if r.generated > 1:
            stats.tpot.observe((now - r.first_token) / (r.generated - 1))
        self.finished.append(r)

    def _reject(self, r: Request, now: float, reason: str) -> None:
        r.state = DONE
        r.status = REJECTED
        r.reason = reason
        r.finished = max(now, self.now)
        self.stats.rejected += 1
        self.finished.append(r)

    # ------------------------------------------------------------------ running set bookkeeping

    def _newest(self) -> Request:
        return self.running[next(reversed(self.running))]

    def _add_decoder(self, r: Request) -> None:
        n = self.step_no  # its first decode step
        r.state = DECODE
        r.off = r.target + 1 - n
        r.entry_step = n
        r.entry_generated = r.generated
        r.done_step = n + (r.output_tokens - r.generated) - 1
        self._keys += 1
        r.heap_key = self._keys
        heapq.heappush(self._heap, (r.done_step, r.heap_key, r))
        self._n_dec += 1
        self._sum_off += r.off
        x = r.off % self.c.block_size
        self._residues[x] += 1
        self._pad = list(map(operator.add, self._pad, self._pad_rows[x]))

    def _remove_decoder(self, r: Request) -> None:
        self._n_dec -= 1
        self._sum_off -= r.off
        x = r.off % self.c.block_size
        self._residues[x] -= 1
        self._pad = list(map(operator.sub, self._pad, self._pad_rows[x]))

    def _remove_running(self, r: Request) -> None:
        if r.state == DECODE:
            r.generated = r.entry_generated + (self.step_no - r.entry_step)
            r.last_token = self.now
            self._remove_decoder(r)
        elif r.state == PREFILL:
            del self.prefilling[r.id]
            self._prefill_blocks -= r.blocks
            r.blocks = 0
        del self.running[r.id]

    def _survivors(self, r: Request) -> int:
        """Full blocks of a preempted request still in the prefix cache.

        Freed blocks join the tail of vLLM's LRU free queue (a request's last block first), and new
        allocations evict from the head: the blocks that were free before it go first, then its own from
        its end, so its prefix survives longest.
        """
        evicted = max(0, self._allocated - r.evict_mark - r.free_before)
        return max(0, r.saved_blocks - evicted)

    def _preempt(self, r: Request) -> None:
        """Recompute preemption: free its blocks and put it at the head of the queue."""
        bs = self.c.block_size
        tokens = r.off + self.step_no - 1 if r.state == DECODE else r.computed
        r.saved_blocks = tokens // bs
        r.evict_mark = self._allocated
        r.free_before = max(0, self.c.kv_blocks - self.kv_blocks_used)
        self._remove_running(r)
        r.state = WAITING
        r.computed = 0
        r.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(r)
