"""The process-wide upload budget: room for a given size is taken atomically and waited for
in line (app.services.byte_budget)."""

from __future__ import annotations

import asyncio
import threading

from app.services.byte_budget import ByteBudget


def test_take_if_fits_counts_what_is_held_and_lets_one_large_file_through_alone():
    budget = ByteBudget(100)
    assert budget.take_if_fits(60)
    assert not budget.take_if_fits(60)  # 120 > 100 while 60 are held
    assert budget.take_if_fits(40)
    budget.give(100)
    assert budget.take_if_fits(500)  # larger than the budget, but the process holds nothing
    assert not budget.take_if_fits(1)


def test_only_one_of_many_threads_takes_the_last_room():
    budget = ByteBudget(100)
    barrier = threading.Barrier(8)
    taken = []

    def race() -> None:
        barrier.wait()
        taken.append(budget.take_if_fits(60))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken.count(True) == 1
    assert budget.used == 60


def test_wait_for_room_waits_until_the_needed_size_fits():
    async def scenario() -> list[str]:
        budget = ByteBudget(100)
        budget.take(70)
        order: list[str] = []

        async def waiter() -> None:
            assert await budget.wait_for_room(5, need=50)
            order.append("room for 50")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        budget.give(10)  # 60 held: within the budget, but 60 + 50 > 100
        await asyncio.sleep(0.05)
        order.append("after giving 10")
        budget.give(20)  # 40 held: 90 fits
        await asyncio.wait_for(task, 2)
        return order

    assert asyncio.run(scenario()) == ["after giving 10", "room for 50"]


def test_wait_for_room_times_out_when_the_size_never_fits():
    async def scenario() -> bool:
        budget = ByteBudget(100)
        budget.take(70)
        return await budget.wait_for_room(0.2, need=50)

    assert asyncio.run(scenario()) is False


def test_waiters_take_their_room_in_turn_so_the_next_cannot_see_the_same_room():
    async def scenario() -> tuple[list[int], int]:
        budget = ByteBudget(100)
        budget.take(60)  # 60 + 50 > 100: all three wait in line
        admitted: list[int] = []

        async def waiter(i: int) -> None:
            assert await budget.wait_for_room(5, need=50)
            admitted.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        budget.give(60)  # room for two members of 50, not three: all are woken at once
        await asyncio.sleep(0.1)
        first, used = list(admitted), budget.used
        budget.give(50)  # one of them is done: the third's turn
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        return first, used, admitted

    first, used, admitted = asyncio.run(scenario())
    assert first == [0, 1] and used == 100  # each took its 50 as it was let through
    assert admitted == [0, 1, 2]
