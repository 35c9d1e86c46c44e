/* Trains the tiny graph's AOT object for a few Adam steps on one fixed batch, with no cnnc at run
 * time: prints the first and the last loss, and the accuracy of the inference entry point. */
#include <stdio.h>
#include <stdlib.h>
#include "tiny.h"

int main(void) {
  enum { B = TINY_TRAIN_B8_BATCH };
  float *params = calloc(TINY_PARAM_FLOATS, sizeof(float)), *grads = calloc(TINY_PARAM_FLOATS, sizeof(float));
  float *m = calloc(TINY_PARAM_FLOATS, sizeof(float)), *v = calloc(TINY_PARAM_FLOATS, sizeof(float));
  float *arena = calloc(TINY_TRAIN_B8_ARENA_FLOATS > TINY_INFER_B8_ARENA_FLOATS ? TINY_TRAIN_B8_ARENA_FLOATS : TINY_INFER_B8_ARENA_FLOATS, sizeof(float));
  float *images = malloc(TINY_TRAIN_B8_IMAGE_FLOATS * sizeof(float));
  int32_t labels[B];
  unsigned s = 12345;
  for (int i = 0; i < TINY_PARAM_FLOATS; i++) { s = s * 1103515245u + 12345u; params[i] = ((s >> 8) / 16777216.0f - 0.5f) * 0.2f; }
  for (int i = 0; i < TINY_TRAIN_B8_IMAGE_FLOATS; i++) { s = s * 1103515245u + 12345u; images[i] = (s >> 8) / 16777216.0f - 0.5f; }
  for (int i = 0; i < B; i++) labels[i] = i % TINY_CLASSES;
  float first = 0, last = 0;
  for (int step = 1; step <= 60; step++) {
    tiny_train_b8(params, grads, m, v, arena, NULL, images, labels, 0.01f, step, 7, NULL);
    last = arena[TINY_TRAIN_B8_LOSS_OFFSET];
    if (step == 1) first = last;
  }
  tiny_infer_b8(params, NULL, NULL, NULL, arena, calloc(TINY_INFER_B8_PREPARED_FLOATS + 1, sizeof(float)), images, NULL, 0, 0, 0, NULL);
  int correct = 0;
  for (int i = 0; i < B; i++) {
    const float *row = arena + TINY_INFER_B8_OUTPUT_OFFSET + i * TINY_CLASSES;
    int best = 0;
    for (int k = 1; k < TINY_CLASSES; k++) if (row[k] > row[best]) best = k;
    correct += best == labels[i];
  }
  printf("first %.9g last %.9g correct %d of %d\n", first, last, correct, B);
  return 0;
}
