"""The inference engine lmforge deploys to: llama.cpp (GGUF export, quantization, a managed ``llama-server``).

Framework-free: nothing here imports Kedro. ``llama_cpp`` finds the built engine, ``build`` builds it,
``gguf`` exports a package to GGUF files (and an Ollama Modelfile), ``server`` runs ``llama-server`` as a
child process that dies with us, ``parity`` checks the engine's tokens against ours.
"""
