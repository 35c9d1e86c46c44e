/* Trains SimpleCNN from MNIST's IDX files with the object `cnnc compile --emit obj` writes, with no cnnc
 * at run time, and prints the loss every 100 steps and the test accuracy at the end.
 *
 *   cnnc compile Graphs/simplecnn.graph --emit obj -o simplecnn.o
 *   cc -O2 -I. Examples/aot/train.c simplecnn.o -lopenblas -lz -lm -o train
 *   ./train data/mnist [steps [test]]  # default: one epoch (937 steps of 64), all 10,000 test images
 *
 * Built with -DCNNC_NO_ZLIB it reads uncompressed IDX files (the same names without .gz) and needs no zlib:
 * for boards and cross builds that have none.
 *
 * Everything the caller must do is in simplecnn.h: parameters initialised as PyTorch does, m and v zeroed,
 * images normalised as in training, exactly BATCH images per step (a short last batch is dropped). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "simplecnn.h"
#ifdef CNNC_NO_ZLIB
typedef FILE *gzFile;
#define gzopen fopen
#define gzread(f, buf, n) ((int)fread(buf, 1, n, f))
#define gzclose fclose
#define IDX_SUFFIX ""
#else
#include <zlib.h>
#define IDX_SUFFIX ".gz"
#endif

enum { B = SIMPLECNN_TRAIN_B64_BATCH, PIXELS = 28 * 28, CLASSES = SIMPLECNN_CLASSES };

/* A gzipped IDX file's payload after its header of `dims` 32-bit sizes; exits on any mismatch. */
static uint8_t *read_idx(const char *dir, const char *name, int dims, int *count) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  gzFile f = gzopen(path, "rb");
  if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
  uint8_t header[16];
  int want = 4 + 4 * dims;
  if (gzread(f, header, want) != want || header[2] != 0x08 || header[3] != dims) { fprintf(stderr, "%s: not an IDX file of %d dimensions\n", path, dims); exit(1); }
  size_t size = 1;
  for (int d = 0; d < dims; d++) size *= (size_t)header[4 + 4 * d] << 24 | header[5 + 4 * d] << 16 | header[6 + 4 * d] << 8 | header[7 + 4 * d];
  *count = header[4] << 24 | header[5] << 16 | header[6] << 8 | header[7];
  uint8_t *data = malloc(size);
  if (!data || gzread(f, data, (unsigned)size) != (int)size) { fprintf(stderr, "%s: truncated\n", path); exit(1); }
  gzclose(f);
  return data;
}

/* A 32-bit linear congruential generator: the example's only randomness (initialisation, shuffling). */
static uint32_t state = 1;
static uint32_t next(void) { state = state * 1664525u + 1013904223u; return state; }
static float uniform(float bound) { return ((next() >> 8) / 16777216.0f * 2 - 1) * bound; }

/* Uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)] for a weight and its bias, as the header says. */
static void init(float *params, int weight, int bias, int count, int biases, int fanIn) {
  float bound = 1 / sqrtf((float)fanIn);
  for (int i = 0; i < count; i++) params[weight + i] = uniform(bound);
  for (int i = 0; i < biases; i++) params[bias + i] = uniform(bound);
}

/* cnnc train's default normalisation: (x/255 - 0.1307) / 0.3081. */
static void normalise(const uint8_t *pixels, float *out, int n) {
  for (int i = 0; i < n; i++) out[i] = (pixels[i] / 255.0f - 0.1307f) / 0.3081f;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "data/mnist";
  int trainCount, testCount, labelCount;
  uint8_t *trainImages = read_idx(dir, "train-images-idx3-ubyte" IDX_SUFFIX, 3, &trainCount);
  uint8_t *trainLabels = read_idx(dir, "train-labels-idx1-ubyte" IDX_SUFFIX, 1, &labelCount);
  uint8_t *testImages = read_idx(dir, "t10k-images-idx3-ubyte" IDX_SUFFIX, 3, &testCount);
  uint8_t *testLabels = read_idx(dir, "t10k-labels-idx1-ubyte" IDX_SUFFIX, 1, &labelCount);
  int steps = argc > 2 ? atoi(argv[2]) : trainCount / B;
  if (steps < 1 || steps > trainCount / B) { fprintf(stderr, "steps must be 1 to %d\n", trainCount / B); return 1; }
  if (argc > 3) {
    int n = atoi(argv[3]);
    if (n < 1 || n > testCount) { fprintf(stderr, "test images must be 1 to %d\n", testCount); return 1; }
    testCount = n;
  }

  float *params = calloc(SIMPLECNN_PARAM_FLOATS, sizeof(float)), *grads = calloc(SIMPLECNN_PARAM_FLOATS, sizeof(float));
  float *m = calloc(SIMPLECNN_PARAM_FLOATS, sizeof(float)), *v = calloc(SIMPLECNN_PARAM_FLOATS, sizeof(float));
  size_t arenaFloats = SIMPLECNN_TRAIN_B64_ARENA_FLOATS > SIMPLECNN_INFER_B64_ARENA_FLOATS ? SIMPLECNN_TRAIN_B64_ARENA_FLOATS : SIMPLECNN_INFER_B64_ARENA_FLOATS;
  float *arena = calloc(arenaFloats, sizeof(float)), *images = malloc(B * PIXELS * sizeof(float));
  // What inference derives from the weights once (step 0 writes it); SimpleCNN's may be empty.
  float *prepared = calloc(SIMPLECNN_INFER_B64_PREPARED_FLOATS + 1, sizeof(float));
  int32_t labels[B];
  init(params, SIMPLECNN_CONV1_WEIGHT_OFFSET, SIMPLECNN_CONV1_BIAS_OFFSET, 32 * 1 * 9, 32, 1 * 9);
  init(params, SIMPLECNN_CONV2_WEIGHT_OFFSET, SIMPLECNN_CONV2_BIAS_OFFSET, 64 * 32 * 9, 64, 32 * 9);
  init(params, SIMPLECNN_FC1_WEIGHT_OFFSET, SIMPLECNN_FC1_BIAS_OFFSET, 128 * 3136, 128, 3136);
  init(params, SIMPLECNN_FC2_WEIGHT_OFFSET, SIMPLECNN_FC2_BIAS_OFFSET, 10 * 128, 10, 128);

  /* One shuffled epoch (Fisher-Yates), drop_last. */
  int *order = malloc(trainCount * sizeof(int));
  for (int i = 0; i < trainCount; i++) order[i] = i;
  for (int i = trainCount - 1; i > 0; i--) { int j = next() % (i + 1), t = order[i]; order[i] = order[j]; order[j] = t; }
  double sum = 0;
  for (int step = 1; step <= steps; step++) {
    for (int b = 0; b < B; b++) {
      int k = order[(step - 1) * B + b];
      normalise(trainImages + (size_t)k * PIXELS, images + b * PIXELS, PIXELS);
      labels[b] = trainLabels[k];
    }
    simplecnn_train_b64(params, grads, m, v, arena, NULL, images, labels, 1e-3f, step, 1, NULL);
    sum += arena[SIMPLECNN_TRAIN_B64_LOSS_OFFSET];
    if (step % 100 == 0 || step == steps) {
      printf("step %d loss %.6f\n", step, sum / (step % 100 ? step % 100 : 100));
      sum = 0;
    }
  }

  /* Test accuracy, BATCH images per call; the last short batch is padded with zero images. */
  int correct = 0;
  for (int first = 0; first < testCount; first += B) {
    int n = testCount - first < B ? testCount - first : B;
    memset(images, 0, B * PIXELS * sizeof(float));
    normalise(testImages + (size_t)first * PIXELS, images, n * PIXELS);
    simplecnn_infer_b64(params, NULL, NULL, NULL, arena, prepared, images, NULL, 0, 0, 0, NULL);
    if (first == 0) {
      printf("logits of test image 0:");
      for (int c = 0; c < CLASSES; c++) printf(" %.6g", arena[SIMPLECNN_INFER_B64_OUTPUT_OFFSET + c]);
      printf("\n");
    }
    for (int i = 0; i < n; i++) {
      const float *row = arena + SIMPLECNN_INFER_B64_OUTPUT_OFFSET + i * CLASSES;
      int best = 0;
      for (int c = 1; c < CLASSES; c++) if (row[c] > row[best]) best = c;
      correct += best == testLabels[first + i];
    }
  }
  printf("test accuracy %.2f%% (%d of %d)\n", 100.0 * correct / testCount, correct, testCount);
  return 0;
}
