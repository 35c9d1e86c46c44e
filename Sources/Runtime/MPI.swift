import Foundation

/// Open MPI, loaded at run time: a build needs no MPI, and a run outside `mpirun` never touches it.
///
/// The calls cnnc makes are few (init, rank, size, allgather, barrier, finalize), so they are looked
/// up with dlsym rather than linked; the communicator, datatypes and ops are Open MPI's exported
/// globals (`ompi_mpi_comm_world`, ...), which is Open MPI's ABI.
public final class MPIRuntime {
  public let rank: Int
  public let size: Int
  let handle: UnsafeMutableRawPointer
  let world: UnsafeMutableRawPointer, float: UnsafeMutableRawPointer
  typealias Allgather = @convention(c) (UnsafeRawPointer?, CInt, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, CInt, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> CInt
  let allgatherFunction: Allgather
  let finalizeFunction: @convention(c) () -> CInt

  /// True when this process was started by an MPI launcher with more than one rank.
  public static var launched: Bool {
    let env = ProcessInfo.processInfo.environment
    let size = env["OMPI_COMM_WORLD_SIZE"] ?? env["PMI_SIZE"] ?? env["PMIX_SIZE"]
    return (size.flatMap(Int.init) ?? 1) > 1
  }

  public init() throws {
    let names = ["libmpi.so.40", "libmpi.so"]
    guard let h = names.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_GLOBAL) }).first else {
      throw DataError("this run was started by mpirun, but Open MPI's library (libmpi.so.40) cannot be loaded; distributed training needs Open MPI: apt-get install openmpi-bin libopenmpi-dev")
    }
    handle = h
    func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
      guard let p = dlsym(h, name) else { throw DataError("Open MPI lacks \(name); cnnc needs Debian's Open MPI 4") }
      return p
    }
    typealias Initialize = @convention(c) (UnsafeMutablePointer<CInt>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt
    typealias CommQuery = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<CInt>) -> CInt
    world = try symbol("ompi_mpi_comm_world")
    float = try symbol("ompi_mpi_float")
    allgatherFunction = unsafeBitCast(try symbol("MPI_Allgather"), to: Allgather.self)
    finalizeFunction = unsafeBitCast(try symbol("MPI_Finalize"), to: (@convention(c) () -> CInt).self)
    guard unsafeBitCast(try symbol("MPI_Init"), to: Initialize.self)(nil, nil) == 0 else { throw DataError("MPI_Init failed") }
    var r: CInt = 0, s: CInt = 1
    _ = unsafeBitCast(try symbol("MPI_Comm_rank"), to: CommQuery.self)(world, &r)
    _ = unsafeBitCast(try symbol("MPI_Comm_size"), to: CommQuery.self)(world, &s)
    rank = Int(r)
    size = Int(s)
  }

  /// Every rank contributes `count` floats; every rank receives all contributions in rank order.
  public func allgather(_ send: UnsafePointer<Float>, count: Int, into receive: UnsafeMutablePointer<Float>) throws {
    let rc = allgatherFunction(send, CInt(count), float, receive, CInt(count), float, world)
    guard rc == 0 else { throw DataError("MPI_Allgather failed with code \(rc)") }
  }

  deinit {
    _ = finalizeFunction()
  }
}
