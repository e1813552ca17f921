import hpcorch

wf = hpcorch.Workflow("w")
wf.task("a\n", command=["echo"])
