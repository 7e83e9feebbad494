# Two commands do everything on a fresh machine: `make demo` and `make test`.
.PHONY: test demo env-up env-down env-status

test:
	scripts/test

demo:
	scripts/demo

env-up:
	scripts/testenv up

env-down:
	scripts/testenv down

env-status:
	scripts/testenv status
