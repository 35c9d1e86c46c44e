/// Element type of a tensor.
public enum DType: String, Equatable, Sendable { case f32, i32 }

/// One dimension of an input declaration: the batch `N` or a fixed size.
public enum Dim: Equatable, Hashable, Sendable {
  case batch
  case fixed(Int)
}

/// A fully static tensor type, known after shape inference.
public struct TensorType: Equatable, Hashable, Sendable, CustomStringConvertible {
  public var dtype: DType
  public var dims: [Int]
  public init(_ dtype: DType, _ dims: [Int]) {
    self.dtype = dtype
    self.dims = dims
  }
  /// Tensors may hold at most 2^40 elements; shape arithmetic beyond it is a diagnostic, not a trap.
  public static let maxElements = 1 << 40

  /// The element count, or nil when it overflows or passes `maxElements`.
  public var checkedCount: Int? { checkedProduct(dims) }
  /// The element count of a type that passed shape inference.
  public var count: Int { dims.reduce(1, *) }
  public var description: String { "\(dtype.rawValue)[\(dims.map(String.init).joined(separator: ", "))]" }
}

/// Product of sizes that reports overflow (or a result above `TensorType.maxElements`) as nil.
public func checkedProduct(_ values: [Int]) -> Int? {
  var p = 1
  for v in values {
    guard v >= 0 else { return nil }
    let (r, o) = p.multipliedReportingOverflow(by: v)
    if o || r > TensorType.maxElements { return nil }
    p = r
  }
  return p
}

/// Scalars the reference kernels run in: Float for training, Double for gradient checks.
public protocol Real: BinaryFloatingPoint, ActivationScalar, Sendable {
  static func exp(_ x: Self) -> Self
  static func log(_ x: Self) -> Self
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

extension Float: Real {
  public static func exp(_ x: Float) -> Float { expf(x) }
  public static func log(_ x: Float) -> Float { logf(x) }
}
extension Double: Real {
  public static func exp(_ x: Double) -> Double {
    #if canImport(Glibc)
      Glibc.exp(x)
    #else
      Darwin.exp(x)
    #endif
  }
  public static func log(_ x: Double) -> Double {
    #if canImport(Glibc)
      Glibc.log(x)
    #else
      Darwin.log(x)
    #endif
  }
}

/// A dense row-major (NCHW) tensor for the reference kernels.
public struct Tensor<T: Real>: Equatable, Sendable {
  public var shape: [Int]
  public var data: [T]
  public init(shape: [Int], data: [T]) {
    precondition(shape.reduce(1, *) == data.count, "tensor data does not match its shape")
    self.shape = shape
    self.data = data
  }
  public init(zeros shape: [Int]) { self.init(shape: shape, data: [T](repeating: 0, count: shape.reduce(1, *))) }
  public var count: Int { data.count }
}
