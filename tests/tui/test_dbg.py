from tests.tui.test_views import *
async def test_dbg(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        log = screen.query_one(LogView)
        print("A", log.scroll_offset, log.virtual_size, log.size, log.max_scroll_y)
        unit = next(s for s in screen.tree.steps.values() if s.name == "unit")
        lines = tuple(f"live line {i}" for i in range(100))
        await seeded_client.publish(LinesLogged(RUNNING_ID, unit.id, Stream.STDOUT, 8, NOW, lines))
        await wait_for(pilot, lambda: log.total == 108, what="live lines")
        print("B", log.scroll_offset, log.virtual_size, log.size, log.max_scroll_y, log._tail_top(), log.follow)
        await pilot.pause(0.3)
        print("C", log.scroll_offset, log.virtual_size, log.size, log.max_scroll_y, log._tail_top(), log.follow)
