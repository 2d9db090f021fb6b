module github.com/parley-chat/parley/complement

go 1.26.8

require github.com/matrix-org/complement v0.0.0-20260901091914-0116400a24df
