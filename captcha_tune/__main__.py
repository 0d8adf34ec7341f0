from captcha_tune.cli import main

main()
