"""auditbus.identity(): who is acting, for events created inside a block or a decorated call."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from auditbus import AuditService, DomainEvent, EventType, ReactiveEventBus, current_identity, identity

DEADLINE = 10.0  # seconds; a wait that runs out means a thread is stuck, which is a failure


def who() -> str | None:
    """The identity a new event picks up."""
    return DomainEvent(event_type=EventType.PLAN_APPLIED).user_identity


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(DEADLINE)
    assert not thread.is_alive(), "worker thread did not finish"


# --- the block -------------------------------------------------------------------------


def test_event_created_in_the_block_carries_the_identity() -> None:
    assert who() is None
    with identity("alice") as given:
        assert given == "alice"
        assert current_identity() == "alice"
        assert who() == "alice"
    assert who() is None
    assert current_identity() is None


def test_explicit_argument_wins() -> None:
    with identity("alice"):
        assert DomainEvent(event_type="plan_applied", user_identity="bob").user_identity == "bob"


def test_the_identity_is_taken_when_the_event_is_built_and_record_stores_what_it_is_given() -> None:
    built_before = DomainEvent(event_type="plan_applied", plan_id="before")
    with AuditService(":memory:") as svc:
        bus = ReactiveEventBus(audit=svc)
        with identity("alice"):
            bus.emit(built_before)
            bus.emit(DomainEvent(event_type="plan_applied", plan_id="inside"))
            assert svc.record("auth_failure").user_identity is None
            assert svc.record("auth_failure", user_identity=current_identity()).user_identity == "alice"
        assert {row.plan_id: row.user_identity for row in svc.query(event_type="plan_applied")} == {
            "before": None,
            "inside": "alice",
        }


def test_model_validate_without_user_identity_takes_the_block() -> None:
    with identity("alice"):
        assert DomainEvent.model_validate({"event_type": "auth_success"}).user_identity == "alice"
        assert DomainEvent.model_validate({"event_type": "auth_success", "user_identity": "x"}).user_identity == "x"


def test_a_str_subclass_identity_is_stored_as_plain_text_like_an_explicit_one() -> None:
    class Role(str, enum.Enum):
        ADMIN = "admin"

    with identity(Role.ADMIN):
        from_block = DomainEvent(event_type="plan_applied")
    explicit = DomainEvent(event_type="plan_applied", user_identity=Role.ADMIN)
    assert type(from_block.user_identity) is str
    assert type(explicit.user_identity) is str
    assert from_block.user_identity == explicit.user_identity == "admin"
    assert "user_identity='admin'" in repr(from_block)


def test_nesting_restores_the_outer_identity() -> None:
    with identity("outer"):
        with identity("inner"):
            assert who() == "inner"
        assert who() == "outer"
    assert who() is None


def test_identity_none_clears_for_the_block() -> None:
    with identity("outer"):
        with identity(None):
            assert who() is None
            assert current_identity() is None
        assert who() == "outer"


def test_restored_when_the_block_raises() -> None:
    with identity("outer"):
        with pytest.raises(RuntimeError, match="boom"), identity("inner"):
            raise RuntimeError("boom")
        assert who() == "outer"
    assert who() is None


def test_one_instance_can_be_reentered() -> None:
    admin = identity("admin")
    with admin:
        with identity("other"), admin:
            assert who() == "admin"
        assert who() == "admin"
    assert who() is None


def test_exiting_where_no_block_is_open_says_so() -> None:
    block = identity("alice")
    block.__enter__()
    errors: list[BaseException] = []

    def exit_elsewhere() -> None:
        try:
            block.__exit__(None, None, None)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    join(run_in_thread(exit_elsewhere))
    block.__exit__(None, None, None)
    assert current_identity() is None
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "identity('alice') is exited where no identity() block is open" in str(error)
    assert "same thread or asyncio task" in str(error)
    with pytest.raises(RuntimeError, match=r"identity\('bob'\) is exited where no identity\(\) block is open"):
        identity("bob").__exit__(None, None, None)


def test_an_outer_block_exited_first_does_not_stay_in_force() -> None:
    """Blocks exited out of order (ExitStack misuse, manual __enter__/__exit__): the one exited is gone."""
    outer, inner = identity("outer"), identity("inner")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert who() == "inner"  # the block still open
    inner.__exit__(None, None, None)
    assert who() is None
    assert current_identity() is None


def test_a_block_left_open_by_a_suspended_generator_does_not_leave_the_enclosing_value_behind() -> None:
    """A generator's `with identity()` runs in its caller's context (contextvars do not isolate
    generators): while it is suspended inside the block, that block is open in the caller."""

    def worker() -> Iterator[None]:
        with identity("svc"):
            yield

    gen = worker()
    with identity("alice"):
        next(gen)
        assert who() == "svc"
    assert who() == "svc"  # not "alice": alice's block has ended
    gen.close()
    assert who() is None
    assert current_identity() is None


def test_exiting_a_block_not_open_here_leaves_the_open_ones_alone() -> None:
    block = identity("alice")
    block.__enter__()
    errors: list[BaseException] = []

    def exit_elsewhere() -> None:
        with identity("bob"):
            try:
                block.__exit__(None, None, None)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)
            errors.append(AssertionError(who()))

    join(run_in_thread(exit_elsewhere))
    [error, seen] = errors
    assert isinstance(error, RuntimeError)
    assert "identity('alice') is exited where it is not open" in str(error)
    assert str(seen) == "bob"  # the thread's own block was not closed by it
    block.__exit__(None, None, None)
    assert current_identity() is None


def test_a_block_reentered_while_open_exits_its_innermost_entry() -> None:
    admin, other = identity("admin"), identity("other")
    with admin:
        admin.__enter__()
        other.__enter__()
        admin.__exit__(None, None, None)  # the inner admin entry, out of order
        assert who() == "other"
        other.__exit__(None, None, None)
        assert who() == "admin"  # the outer admin block is still open
    assert who() is None


@pytest.mark.parametrize("bad", [3, b"alice", ["alice"]])
def test_bad_argument_is_a_type_error_naming_what_is_accepted(bad: object) -> None:
    with pytest.raises(TypeError, match=r"identity\(\) takes a str or None, got"):
        identity(bad)  # type: ignore[arg-type]


SECRET_TOKEN = "ghp_" + "A1b2C3d4" * 4 + "E5f6"  # a GitHub token shape


@pytest.mark.parametrize(
    "bad", [SECRET_TOKEN.encode(), [SECRET_TOKEN], {"password": "hunter22"}], ids=["bytes", "list", "dict"]
)
def test_a_bad_argument_is_quoted_with_its_secrets_masked(bad: object) -> None:
    """The error names the value as other auditbus errors do: secret shapes masked, since callers log errors."""
    with pytest.raises(TypeError, match=r"identity\(\) takes a str or None, got") as raised:
        identity(bad)  # type: ignore[arg-type]
    assert SECRET_TOKEN not in str(raised.value)
    assert "hunter22" not in str(raised.value)
    assert "***REDACTED***" in str(raised.value)


def test_a_bad_argument_is_quoted_at_a_bounded_length() -> None:
    with pytest.raises(TypeError, match=r"got bytes b'xxx") as raised:
        identity(b"x" * 100_000)  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200


def test_exiting_where_no_block_is_open_masks_a_secret_shaped_identity() -> None:
    with pytest.raises(RuntimeError, match="is exited where no identity") as raised:
        identity(SECRET_TOKEN).__exit__(None, None, None)
    assert SECRET_TOKEN not in str(raised.value)


def test_repr() -> None:
    assert repr(identity("alice")) == "identity('alice')"


# --- the decorator ---------------------------------------------------------------------


def test_decorator_sync() -> None:
    @identity("svc")
    def apply(plan_id: str, *, note: str = "") -> tuple[str | None, str, str]:
        """Applies a plan."""
        return who(), plan_id, note

    assert apply("p1", note="n") == ("svc", "p1", "n")
    assert who() is None
    assert apply.__name__ == "apply"
    assert apply.__doc__ == "Applies a plan."


def test_decorator_inside_an_outer_block_wins_for_the_call_only() -> None:
    @identity("svc")
    def inner() -> str | None:
        return who()

    with identity("outer"):
        assert inner() == "svc"
        assert who() == "outer"


def test_decorator_restores_on_exception() -> None:
    @identity("svc")
    def fails() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    assert who() is None


def test_decorator_async() -> None:
    @identity("svc")
    async def apply() -> str | None:
        await asyncio.sleep(0)
        return who()

    assert asyncio.iscoroutinefunction(apply)
    assert asyncio.run(apply()) == "svc"
    assert who() is None


def test_decorator_refuses_generator_functions() -> None:
    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    for func in (gen, agen):
        with pytest.raises(TypeError, match="not the generator function"):
            identity("x")(func)


def test_decorator_refuses_what_is_not_callable() -> None:
    with pytest.raises(TypeError, match="decorates a function, got int"):
        identity("x")(3)  # type: ignore[type-var]


def test_decorating_a_non_callable_masks_its_secrets() -> None:
    with pytest.raises(TypeError, match="decorates a function, got bytes") as raised:
        identity("x")(SECRET_TOKEN.encode())  # type: ignore[type-var]
    assert SECRET_TOKEN not in str(raised.value)


# --- threads -----------------------------------------------------------------------


def test_does_not_leak_to_other_threads() -> None:
    entered, seen = threading.Event(), {}

    def worker() -> None:
        assert entered.wait(DEADLINE)
        seen["running"] = who()

    existing = run_in_thread(worker)
    with identity("alice"):
        entered.set()
        join(existing)

        started_inside: dict[str, str | None] = {}
        join(run_in_thread(lambda: started_inside.setdefault("who", who())))
        assert who() == "alice"
    assert seen == {"running": None}
    assert started_inside == {"who": None}


def test_each_thread_has_its_own_identity() -> None:
    barrier = threading.Barrier(2, timeout=DEADLINE)
    seen: dict[str, str | None] = {}

    def worker(name: str) -> None:
        with identity(name):
            barrier.wait()  # both blocks are open at once
            seen[name] = who()
            barrier.wait()

    threads = [run_in_thread(lambda n=name: worker(n)) for name in ("t1", "t2")]
    for thread in threads:
        join(thread)
    assert seen == {"t1": "t1", "t2": "t2"}


def test_one_shared_instance_entered_by_two_threads_exits_in_any_order() -> None:
    admin = identity("admin")
    both_in = threading.Barrier(2, timeout=DEADLINE)
    first_out = threading.Event()
    errors: list[BaseException] = []
    seen: dict[str, str | None] = {}

    def worker(name: str, exit_first: bool) -> None:
        try:
            with identity(f"{name}-outer"):
                with admin:
                    both_in.wait()
                    if not exit_first:
                        assert first_out.wait(DEADLINE)
                seen[name] = who()
                if exit_first:
                    first_out.set()
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)
            first_out.set()

    threads = [run_in_thread(lambda: worker("a", True)), run_in_thread(lambda: worker("b", False))]
    for thread in threads:
        join(thread)
    assert errors == []
    assert seen == {"a": "a-outer", "b": "b-outer"}


# --- asyncio tasks -----------------------------------------------------------------------


def test_tasks_created_inside_the_block_inherit_it_and_others_do_not() -> None:
    async def main() -> dict[str, str | None]:
        entered = asyncio.Event()
        seen: dict[str, str | None] = {}

        async def outside() -> None:
            await entered.wait()
            seen["outside"] = who()

        async def inside() -> None:
            seen["inside"] = who()

        before = asyncio.create_task(outside())
        with identity("alice"):
            child = asyncio.create_task(inside())
            entered.set()
            await asyncio.wait_for(asyncio.gather(before, child), DEADLINE)
        seen["after"] = who()
        return seen

    assert asyncio.run(main()) == {"outside": None, "inside": "alice", "after": None}


def test_a_tasks_own_block_does_not_leak_to_its_parent() -> None:
    async def main() -> tuple[str | None, str | None]:
        async def child() -> str | None:
            with identity("child"):
                await asyncio.sleep(0)
                return who()

        with identity("parent"):
            got = await asyncio.wait_for(asyncio.create_task(child()), DEADLINE)
            return got, who()

    assert asyncio.run(main()) == ("child", "parent")


def test_one_shared_instance_entered_by_interleaved_tasks() -> None:
    admin = identity("admin")

    async def main() -> list[str | None]:
        a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
        seen: list[str | None] = []

        async def first() -> None:
            with admin:
                a_in.set()
                await b_in.wait()
            seen.append(who())  # exits while the other task is still inside
            a_out.set()

        async def second() -> None:
            await a_in.wait()
            with admin:
                b_in.set()
                await a_out.wait()
                seen.append(who())
            seen.append(who())

        await asyncio.wait_for(asyncio.gather(first(), second()), DEADLINE)
        return seen

    assert asyncio.run(main()) == [None, "admin", None]
    assert who() is None


def test_a_task_exiting_a_block_its_parent_opened_raises_and_changes_nothing() -> None:
    """A task copies its parent's context, open blocks included; the block is still not open in it."""
    parent, child_block = identity("parent"), identity("child")

    async def main() -> list[object]:
        seen: list[object] = []

        async def child(block: identity, inner: bool) -> None:
            if inner:
                child_block.__enter__()
            with pytest.raises(RuntimeError, match=r"identity\('parent'\) is exited where it is not open"):
                block.__exit__(None, None, None)
            seen.append(who())
            if inner:
                child_block.__exit__(None, None, None)
            with pytest.raises(RuntimeError, match=r"identity\('parent'\) is exited where it is not open"):
                block.__exit__(None, None, None)  # still refused: nothing was changed by the first try
            seen.append(who())

        with parent:
            for inner in (False, True):
                await asyncio.wait_for(asyncio.create_task(child(parent, inner)), DEADLINE)
            seen.append(who())
        seen.append(who())
        return seen

    assert asyncio.run(main()) == ["parent", "parent", "child", "parent", "parent", None]


def test_an_async_generator_left_inside_its_block_is_closed_where_it_is_consumed_with_aclosing() -> None:
    """Left inside its block (`break`), an async generator is closed later by the loop in a task of its
    own, where the block cannot be exited: each one left its identity in force in the consumer, and one
    more open block, for as long as the consumer ran. `contextlib.aclosing()` closes it in the consumer."""

    async def rows(name: str) -> AsyncIterator[int]:
        with identity(name):
            yield 1
            yield 2

    async def consume() -> list[str | None]:
        seen = []
        for i in range(3):
            async with contextlib.aclosing(rows(f"svc{i}")) as gen:
                async for _ in gen:
                    break
            seen.append(who())
        return seen

    assert asyncio.run(asyncio.wait_for(consume(), DEADLINE)) == [None, None, None]
