"""Load for the profile service, for your own Locust (``locust -f ... --host URL``).

The experiment's traffic control runs the extension's own locustfile, which sends the same
three requests (profiles 6 : recommendations 3 : payments 1); this one is the shape to copy
for a service of your own.
"""

import random
import uuid

from locust import FastHttpUser, between, task

POPULATION = 10_000
HOT_USERS = 20


class ProfileUser(FastHttpUser):  # type: ignore[misc]
    wait_time = between(0.5, 1.5)
    max_retries = 0  # no load-generator retries: they would hide what users see

    def _user(self) -> int:
        if random.random() < 0.5:
            return random.randint(1, HOT_USERS)
        return random.randint(1, POPULATION)

    @task(6)
    def profile(self) -> None:
        self.client.get(f"/users/{self._user()}/profile", name="/users/[id]/profile")

    @task(3)
    def recommendations(self) -> None:
        self.client.get(
            f"/users/{self._user()}/recommendations", name="/users/[id]/recommendations"
        )

    @task(1)
    def payment(self) -> None:
        body = {"amount_cents": random.randint(100, 50_000), "idempotency_key": uuid.uuid4().hex}
        self.client.post(f"/users/{self._user()}/payments", json=body, name="/users/[id]/payments")
