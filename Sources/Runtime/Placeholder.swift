// Runtime: interpreter, data, optimisers, trainer.
