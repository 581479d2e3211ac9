"""`sample.backend: vllm`: a server started on the stage's policy, sampled over HTTP.

vLLM runs from its own environment (`serving.launch.command`): its pins on torch, fastapi and
transformers clash with Prefect's. The server loads the checkpoint the stage samples from,
so nothing syncs weights between stages; it is stopped when the stage's sampler closes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.openai_sampler import OpenAISampler
from models.server import ManagedServer, free_port, launch_values, render_command


class VLLMSampler(OpenAISampler):
    def __init__(self, policy: Path, *, batch_size: int, threads: int, serving: Any,
                 seed: int = 0) -> None:
        import httpx

        from cotflow.layout import log_file

        launch = serving.launch
        host, port = "127.0.0.1", free_port()
        argv = render_command(launch.command, launch_values(
            launch, model=Path(policy).resolve(), host=host, port=port, seed=seed))
        # Beside the stage logs of the folder the policy is in: logs/<folder>/server-PORT.log
        log_path = log_file(Path(policy).resolve().parent, f"server-{port}")
        # The server's torch gets the stage's thread budget: on a shared CPU, a default of
        # one thread per core made transformers serve 10x slower (vLLM sets its own).
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        self.server = ManagedServer(argv, host=host, port=port, log_path=log_path, env=env,
                                    startup_timeout_s=launch.startup_timeout_s)
        base_url = self.server.__enter__()
        try:
            # The name the server gives the checkpoint (a path, or --served-model-name).
            models = httpx.get(base_url + "/models", timeout=30).json()["data"]
            super().__init__(policy, batch_size=batch_size, threads=threads, serving=serving,
                             base_url=base_url, model=models[0]["id"])
        except BaseException:
            self.server.stop()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.stop()
