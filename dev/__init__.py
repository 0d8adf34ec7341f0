"""One-off profilers behind figures and decisions in the README; not benchmarks `make bench` reruns.

    flock /tmp/captcha-tune-ray.lock python -m dev.profile_startup   # where a trial's start-up goes
    flock /tmp/captcha-tune-ray.lock python -m dev.profile_ddp       # where a 2-worker DDP step's time goes
"""
