# cnnc: every target is a thin layer over swift; `make train` and `make test` install what is missing.
SWIFT   ?= swift
CNNC     = .build/release/cnnc
GRAPHS   = $(wildcard Graphs/*.graph)
APT_PKGS = llvm-19-dev libopenblas-dev zlib1g-dev libturbojpeg0-dev gcc openmpi-bin libopenmpi-dev gcc-aarch64-linux-gnu qemu-user

.PHONY: deps build release test train generate check-generated bench bench-compare fashion-compare onnx-check zoo-check zoo-compare zoo-train-check transforms-check finetune-check batchnorm-check interop fuzz fuzz-cli fuzz-graphs report-screenshot sz clean

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Tests run in a release build: the ones that train would crawl in a debug build.
test: release
	$(SWIFT) test -c release
	$(MAKE) check-generated
	$(MAKE) sz
	python3 Scripts/check-imports.py

# The main job: SimpleCNN on the bundled MNIST with the LLVM JIT back end.
train: release
	$(CNNC) train Graphs/simplecnn.graph --jit --epochs 3 --overwrite

# Generated/ is rendered for fixed named targets, so it is the same bytes on every build machine:
# AVX2 (x86-64-v3) for every graph, and AVX-512 (x86-64-v4) for SimpleCNN as well.
GEN_TARGET = --target x86_64-unknown-linux-gnu --cpu
generate: release
	@mkdir -p Generated
	@for g in $(GRAPHS); do n=$$(basename $$g .graph); \
	  $(CNNC) compile $$g --emit swift $(GEN_TARGET) x86-64-v3 -o Generated/$$n.swift >/dev/null && \
	  $(CNNC) compile $$g --emit llvm $(GEN_TARGET) x86-64-v3 -o Generated/$$n.ll >/dev/null && \
	  $(CNNC) dump-ir $$g --stage grad > Generated/$$n.grad.graph || exit 1; done
	@$(CNNC) compile Graphs/simplecnn.graph --emit swift $(GEN_TARGET) x86-64-v4 -o Generated/simplecnn.x86-64-v4.swift >/dev/null
	@$(CNNC) compile Graphs/simplecnn.graph --emit llvm $(GEN_TARGET) x86-64-v4 -o Generated/simplecnn.x86-64-v4.ll >/dev/null
	@echo "Generated/ rewritten from $(words $(GRAPHS)) graphs (x86-64-v3; SimpleCNN also x86-64-v4)"

check-generated: generate
	@test -z "$$(git status --porcelain -- Generated/)" \
	  || { git status --short -- Generated/; echo "Generated/ is out of date: run 'make generate' and commit the result"; exit 1; }

bench: release
	$(CNNC) bench Graphs/simplecnn.graph --backend jit

clean:
	rm -rf .build

# Lines per target; fails on a function over the length budget (LONG_FUNCTION, default 60; signatures count).
sz:
	@sh Scripts/sz.sh

# Checkpoint interop with PyTorch's state_dict format (safetensors + numpy from PyPI, no torch needed).
VENV = .build/venv
$(VENV)/bin/python:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q safetensors numpy

interop: release $(VENV)/bin/python
	$(CNNC) train Graphs/simplecnn.graph --jit --steps 50 --out .build/interop --overwrite >/dev/null
	$(VENV)/bin/python Scripts/interop.py check .build/interop/weights.safetensors
	$(VENV)/bin/python Scripts/interop.py write .build/interop/from-pytorch.safetensors
	$(CNNC) eval Graphs/simplecnn.graph --weights .build/interop/from-pytorch.safetensors | head -1

# The command-line fuzzer (Tests/EndToEndTests/CLIFuzzTests.swift) at length: FUZZ_CLI_RUNS hostile command lines
# (make test runs 400), seeded by FUZZ_CLI_SEED; any signal, hang, unexpected exit status or raw dump fails.
FUZZ_CLI_RUNS ?= 5000
FUZZ_CLI_SEED ?= 20261206
fuzz-cli: release
	CNNC_FUZZ_RUNS=$(FUZZ_CLI_RUNS) CNNC_FUZZ_SEED=$(FUZZ_CLI_SEED) $(SWIFT) test -c release --filter CLIFuzzTests

# Coverage-guided fuzzing with libFuzzer: TARGET=graph (the whole pipeline to the memory plan), safetensors,
# idx (raw and gzip), png, jpeg, onnx (import, shapes, lowering), npy, or all (the default), FUZZ_SECONDS each. Crashes land in Fuzz/regressions/TARGET/,
# which `make test` replays; commit them with the fix.
FUZZ_SECONDS ?= 120
TARGET ?= all
FUZZ_TARGETS = graph safetensors idx png jpeg onnx npy
FUZZ = .build-fuzz/release/cnnc-fuzz
fuzz: release
	$(SWIFT) build -c release --product cnnc-fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xlinker --export-dynamic
	@for t in $(if $(filter all,$(TARGET)),$(FUZZ_TARGETS),$(TARGET)); do \
	  mkdir -p .build-fuzz/corpus/$$t Fuzz/regressions/$$t; \
	  cp Fuzz/regressions/$$t/* .build-fuzz/corpus/$$t/ 2>/dev/null; \
	  case $$t in \
	    graph) cp Graphs/*.graph Graphs/invalid/*.graph .build-fuzz/corpus/$$t/ ;; \
	    png) cp Tests/Fixtures/*.png .build-fuzz/corpus/$$t/ ;; \
	    jpeg) cp Tests/Fixtures/images/*.jpg .build-fuzz/corpus/$$t/ ;; \
	    onnx) cp Tests/Fixtures/onnx/*.onnx .build-fuzz/corpus/$$t/ ;; \
	    npy) cp Tests/Fixtures/npy/*.npy .build-fuzz/corpus/$$t/ ;; \
	    idx) cp data/mnist/t10k-labels-idx1-ubyte.gz .build-fuzz/corpus/$$t/ ;; \
	    safetensors) $(CNNC) train Graphs/tiny.graph --jit --steps 2 --out .build-fuzz/seed-run --overwrite --no-report >/dev/null && \
	      cp .build-fuzz/seed-run/weights.safetensors .build-fuzz/seed-run/optimizer.safetensors .build-fuzz/corpus/$$t/ ;; \
	  esac; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  CNNC_FUZZ_TARGET=$$t $(FUZZ) -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
	    -artifact_prefix=Fuzz/regressions/$$t/ .build-fuzz/corpus/$$t || exit 1; \
	done

# The structure-aware graph generator at scale: thousands of random valid graphs, both back ends against
# the interpreter (make test runs 150).
GENERATED_GRAPHS ?= 3000
fuzz-graphs: release
	CNNC_GENERATED_GRAPHS=$(GENERATED_GRAPHS) $(SWIFT) test -c release --filter GeneratedGraphTests

# cnnc against TensorFlow and PyTorch on this machine, same protocol, one run (PyPI packages in .build/peers).
PEERS = .build/peers
BENCH_EPOCHS ?= 3
# fp32, or bf16: cnnc --precision bf16 against PyTorch's CPU autocast to bfloat16 and Keras's mixed_bfloat16.
PRECISION ?= fp32
$(PEERS)/bin/python:
	python3 -m venv $(PEERS)
	$(PEERS)/bin/pip install -q numpy tensorflow-cpu
	$(PEERS)/bin/pip install -q torch || echo "PyTorch could not be installed from PyPI; comparing with TensorFlow only"

# ISA=host (default) compares on this machine's best ISA; ISA=avx2 or ISA=avx512 caps every side at that ISA
# (cnnc --cpu x86-64-v3/v4; oneDNN, ATen and TensorFlow through their environment variables), so the AVX2
# rows can be measured on an AVX-512 machine. Each framework's JSON says which ISA it actually ran.
ISA ?= host
ISA_CPU_avx2 = --cpu x86-64-v3
ISA_CPU_avx512 = --cpu x86-64-v4
ISA_ENV_avx2 = ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 TF_ENABLE_ONEDNN_OPTS=1
ISA_ENV_avx512 = ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512 TF_ENABLE_ONEDNN_OPTS=1
bench-compare: release $(PEERS)/bin/python
	@case "$(ISA)" in host|avx2|avx512) ;; *) echo "ISA must be host, avx2 or avx512"; exit 1;; esac
	@case "$(PRECISION)" in fp32|bf16) ;; *) echo "PRECISION must be fp32 or bf16"; exit 1;; esac
	{ $(CNNC) bench --epochs $(BENCH_EPOCHS) $(ISA_CPU_$(ISA)) --precision $(PRECISION) || exit 1; \
	  cd Scripts/peers && env $(ISA_ENV_$(ISA)) PRECISION=$(PRECISION) ../../$(PEERS)/bin/python bench_tensorflow.py $(BENCH_EPOCHS) 2>/dev/null; \
	  env $(ISA_ENV_$(ISA)) PRECISION=$(PRECISION) ../../$(PEERS)/bin/python bench_pytorch.py $(BENCH_EPOCHS) 2>/dev/null || true; } > .build/bench-compare-$(ISA)-$(PRECISION).json
	python3 Scripts/compare.py < .build/bench-compare-$(ISA)-$(PRECISION).json

# Fashion-MNIST's batch-norm CNN trained by cnnc and by PyTorch under one protocol, in one run: test accuracy
# per epoch and training images/s of each (FASHION_EPOCHS epochs; Debian's dataset-fashion-mnist; both sides
# with FASHION_AUGMENT, none or flip, and FASHION_SCHEDULE, none or cosine); then the PyTorch-trained model
# evaluated by cnnc must get exactly PyTorch's count of correct test images.
FASHION = /usr/share/datasets/fashion-mnist
FASHION_EPOCHS ?= 10
FASHION_AUGMENT ?= flip
FASHION_SCHEDULE ?= cosine
FASHION_CNNC_FLAGS = $(if $(filter flip,$(FASHION_AUGMENT)),--augment flip) $(if $(filter cosine,$(FASHION_SCHEDULE)),--lr-schedule cosine)
fashion-compare: release $(PEERS)/bin/python
	@[ -f $(FASHION)/train-images-idx3-ubyte.gz ] || $(MAKE) deps APT_PKGS=dataset-fashion-mnist
	$(CNNC) train Graphs/bncnn.graph --jit --data $(FASHION) --epochs $(FASHION_EPOCHS) --normalize data $(FASHION_CNNC_FLAGS) --out .build/fashion-cnnc --overwrite --no-report \
	  | grep 'test acc' | tee .build/fashion-cnnc.txt
	$(PEERS)/bin/pip install -q safetensors
	$(PEERS)/bin/python Scripts/fashion_compare.py $(FASHION) $(FASHION_EPOCHS) .build/fashion-pytorch.safetensors \
	  --augment $(FASHION_AUGMENT) --lr-schedule $(FASHION_SCHEDULE) | tee .build/fashion-pytorch.json
	python3 Scripts/fashion_report.py .build/fashion-cnnc.txt .build/fashion-pytorch.json
	@# The PyTorch-trained model in cnnc eval (strict state_dict names, running statistics): the same count of correct images.
	@correct=$$($(CNNC) eval Graphs/bncnn.graph --weights .build/fashion-pytorch.safetensors --data $(FASHION) | sed -n 's/.*(\([0-9]*\) of.*/\1/p' | head -1); \
	expected=$$(python3 -c "import json; print(json.loads(open('.build/fashion-pytorch.json').read().splitlines()[-1])['correct'])"); \
	echo "PyTorch-trained bncnn: PyTorch $$expected correct, cnnc eval $$correct"; [ "$$correct" = "$$expected" ]

# ONNX in and out against the real tools (PyPI torch, onnx and onnxruntime in .build/peers): the seed networks
# exported by torch.onnx, imported by cnnc (parameter count, logits within 1e-4 on 100 test images) and trained
# an epoch; a cnnc-trained SimpleCNN exported, checked by onnx.checker and run by ONNX Runtime (the same 10,000
# test predictions as cnnc). ONNX_STEPS=N cuts the training epochs short.
ONNX_STEPS ?=
onnx-check: release $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q onnx onnxruntime onnxscript
	@mkdir -p .build/onnx-check
	$(PEERS)/bin/python Scripts/onnx/onnx_check.py $(CNNC) .build/onnx-check $(ONNX_STEPS)

# The photo transforms (--transform, --augment) against the installed torchvision: its outputs on synthetic photos
# rewritten into .build/transforms-check (the committed copies in Tests/Fixtures/transforms are what make test
# checks), then cnnc's test on them: within 1/255 per pixel.
transforms-check: $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q torchvision
	@mkdir -p .build/transforms-check
	$(PEERS)/bin/python Scripts/fixtures/make_transforms.py .build/transforms-check
	CNNC_TRANSFORM_FIXTURES=$(CURDIR)/.build/transforms-check $(SWIFT) test -c release --filter ImageTransformsTests

# torchvision's classification models (random seeded weights and batch-norm statistics, eval mode, both torch.onnx
# exporters) through `cnnc infer` against ONNX Runtime on 4 random 224x224 images: logits within 1e-3 of the
# largest (PyPI torch, torchvision, onnx, onnxruntime, onnxscript in .build/peers). ZOO_MODELS="resnet18 ..."
# checks some of them.
ZOO_MODELS ?=
zoo-check: release $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q torchvision onnx onnxruntime onnxscript safetensors
	@mkdir -p .build/zoo-check
	$(PEERS)/bin/python Scripts/zoo/zoo_check.py $(CNNC) .build/zoo-check $(ZOO_MODELS)

# Inference speed of torchvision models (224x224, random weights, one torch.onnx export each) against ONNX Runtime
# and OpenVINO at batch 1 and 16, 2 threads, fp32 (Scripts/zoo/zoo_compare.py; ZOO_MODELS picks models). cnnc runs
# at ISA (host, avx2 or avx512: --cpu); the engines at the machine's full ISA, so the AVX2 row is the stricter test.
# PRECISION=int8 times ONNX Runtime's quantize_static (QDQ) file of each model in all three instead (7-bit weights with ISA=avx2).
zoo-compare: release $(PEERS)/bin/python
	@case "$(ISA)" in host|avx2|avx512) ;; *) echo "ISA must be host, avx2 or avx512"; exit 1;; esac
	$(PEERS)/bin/pip install -q torchvision onnx onnxruntime openvino
	@mkdir -p .build/zoo-compare
	CNNC_FLAGS="$(ISA_CPU_$(ISA))" PRECISION=$(PRECISION) REDUCE_RANGE=$(if $(filter avx2,$(ISA)),1,0) $(PEERS)/bin/python Scripts/zoo/zoo_compare.py $(CNNC) .build/zoo-compare $(ZOO_MODELS)

# Training from ONNX against PyTorch: ResNet-18 and MobileNetV2 (10 classes, 32x32, batch norms kept by the export)
# take one SGD step in `cnnc train MODEL.onnx`; its gradients must equal PyTorch's (float64) within 1e-4, and 200
# steps on a small learnable task must lower the loss (Scripts/zoo/train_check.py; ZOO_MODELS picks models).
zoo-train-check: release $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q torchvision onnx onnxscript safetensors
	@mkdir -p .build/zoo-train
	$(PEERS)/bin/python Scripts/zoo/train_check.py $(CNNC) .build/zoo-train $(ZOO_MODELS)

# Fine-tuning ResNet-18 on a folder of synthetic JPEG photos, head-only and whole network, cnnc against PyTorch
# under one protocol (Scripts/zoo/finetune_check.py): both accuracies and the training speed ratio.
finetune-check: release $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q torchvision onnx onnxscript
	@mkdir -p .build/finetune-check
	$(PEERS)/bin/python Scripts/zoo/finetune_check.py $(CNNC) .build/finetune-check

# Batch norm against PyTorch: a cnnc-trained bncnn loaded into nn.BatchNorm2d / nn.BatchNorm1d (strict state_dict,
# buffers and num_batches_tracked included) must predict the MNIST test set exactly as `cnnc eval` does.
batchnorm-check: release $(PEERS)/bin/python
	$(PEERS)/bin/pip install -q safetensors
	$(CNNC) train Graphs/bncnn.graph --jit --steps 200 --out .build/bn-check --overwrite > /dev/null
	correct=$$($(CNNC) eval Graphs/bncnn.graph --weights .build/bn-check/weights.safetensors | sed -n 's/.*(\([0-9]*\) of.*/\1/p' | head -1); \
	$(PEERS)/bin/python Scripts/batchnorm_check.py .build/bn-check/weights.safetensors data/mnist $$correct

# The training report rendered by a real headless browser (Debian's chromium), as a PNG to look at.
report-screenshot: release
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	rm -rf .build/report-1 .build/report-early
	$(CNNC) train Graphs/simplecnn.graph --jit --epochs 1 --out .build/report-1 --overwrite
	$(CNNC) train Graphs/tiny.graph --jit --epochs 15 --lr 0.01 --val 0.2 --patience 3 --out .build/report-early --overwrite
	for r in report-1 report-early; do \
	  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1300,3400 \
	    --screenshot=$(CURDIR)/.build/$$r/report.png file://$(CURDIR)/.build/$$r/report.html 2>/dev/null; \
	  echo "screenshot: .build/$$r/report.png"; \
	done
