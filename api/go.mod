module github.com/stkgate/stkgate/api

go 1.26.8

require github.com/stkgate/stkgate/events v0.0.0-00010101000000-000000000000

replace github.com/stkgate/stkgate/events => ../events
