module umbrella.testenv/token-server

go 1.22
