"""captcha-tune: the command-line entry point. The library lives in trainable/, search/, results/, cluster/."""
