import Lowering
import Testing

/// How inference calls split into chunks (`ProgramSet.balancedChunk`): the cores each run whole chunks, as many
/// chunks for each core, with little padding.
@Suite struct ProgramSetTests {
  @Test(arguments: [
    // (images, largest chunk, parts, chunk)
    (16, 6, 2, 4),      // 6, 6 and 4 would leave one core idle for a third of the call: four chunks of 4
    (16, 3, 2, 2),      // six chunks of 3 pad two images: eight of 2 pad none
    (16, 16, 2, 8),     // one chunk per core
    (1000, 64, 2, 63),  // sixteen chunks of 63 pad 8 images, within 1/32
    (1000, 64, 1, 63),
    (3, 16, 2, 2),      // fewer than two chunks a part: as few chunks as the parts, 2 and 1
    (1, 16, 2, 1),
    (7, 2, 1, 2),
  ]) func chunksBalanceOverTheParts(_ count: Int, _ chunk: Int, _ parts: Int, _ expected: Int) {
    let size = ProgramSet.balancedChunk(count, chunk, parts: parts)
    #expect(size == expected, "\(count) images, chunks of at most \(chunk), \(parts) parts")
    #expect(size <= chunk, "a chunk within the largest")
    let chunks = (count + size - 1) / size
    if count >= 2 * parts { #expect(chunks % parts == 0, "\(chunks) chunks over \(parts) parts") }
    #expect(chunks * size - count <= max(count / 32, size - 1), "padding of \(count) images in chunks of \(size)")
  }

  @Test func chunksFitTheCaches() {
    var t = Target.named("x86-64-v4", isa: .avx512)
    t.l2 = 1 << 20
    t.l3 = 32 << 20
    #expect(t.inferenceChunk(activationBytesPerImage: 10 << 20) == 3, "a 224x224 image's 10 MB: three in L2 + L3")
    #expect(t.inferenceChunk(activationBytesPerImage: 64 << 20) == 1, "one image larger than the caches still runs")
    #expect(t.inferenceChunk(activationBytesPerImage: 100 << 10) == 64, "small images: at most 64")
  }
}
