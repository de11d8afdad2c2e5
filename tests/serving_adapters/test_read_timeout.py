"""The scorer's answer when the online read times out, through the scoring app and a real redis-server made slow
(``CLIENT PAUSE``): a coalesced group shares one round trip, so every request of it answers the same 503
OnlineUnavailableError, whose message names the read timeout and the round trip's size (a loaded bench run's
"not 200" answers came in whole groups like this); once Redis answers again, so does the scorer."""

from __future__ import annotations

import asyncio

import redis

from fixtures.serving import ScoringWorld, score_body, serving


def test_a_timed_out_round_trip_answers_503_naming_the_read_timeout_for_each_request(
        scoring_world: ScoringWorld, scoring_redis: str) -> None:
    async def go() -> None:
        async with serving(scoring_world, scoring_redis, read_timeout=0.3) as (_, client):
            assert (await client.post("/v1/score", json=score_body(1, [1, 2]))).status_code == 200
            admin = redis.Redis.from_url(scoring_redis)
            admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
            try:
                answers = await asyncio.gather(*(client.post("/v1/score", json=score_body(u, [1, 2, 3]))
                                                 for u in range(4)))
            finally:
                admin.execute_command("CLIENT", "UNPAUSE")
                admin.close()
            for answer in answers:
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["type"] == "OnlineUnavailableError"
                assert "no reply within the read timeout (0.3 s for one round trip of" in error["message"]
            assert (await client.post("/v1/score", json=score_body(2, [4, 5]))).status_code == 200

    asyncio.run(go())
